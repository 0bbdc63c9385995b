"""Functions a child cannot import, and main modules without the ``__main__`` guard: the
user is told what happened and what to do, and nothing hangs or respawns in a loop."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT_TIMEOUT = 60


def _run_script(tmp_path: Path, source: str, start_method: str) -> str:
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(source))
    done = subprocess.run(
        [sys.executable, str(script), start_method],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        cwd=tmp_path,
    )
    return done.stdout + done.stderr


def test_function_defined_under_the_main_guard_fails_with_importability_advice(
    tmp_path: Path, start_method: str
) -> None:
    output = _run_script(
        tmp_path,
        """
        import multiprocessing, sys
        from aioexec import AsyncProcessExecutor, DeliveryError

        if __name__ == "__main__":
            def defined_under_guard(x):  # the child re-imports __main__ without this block
                return x

            ctx = multiprocessing.get_context(sys.argv[1])
            with AsyncProcessExecutor(1, mp_context=ctx) as ex:
                try:
                    ex.submit(defined_under_guard, 1).result(30)
                except DeliveryError as exc:
                    cause = exc.__cause__
                    print("FAILED", type(cause).__name__, *getattr(cause, "__notes__", []))
                print("STILL WORKS", ex.submit(pow, 2, 5).result(30))
        """,
        start_method,
    )
    assert "FAILED AttributeError" in output, output
    assert "must be importable by the worker" in output
    assert "if __name__ == '__main__':" in output
    assert "STILL WORKS 32" in output


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_main_module_without_the_guard_is_explained_and_does_not_hang(
    tmp_path: Path, start_method: str
) -> None:
    # A child re-imports the main module, so the unguarded code starts an executor in the
    # child too; that attempt fails and says why, and the script still ends (bounded by
    # subprocess.run's timeout): no hang and no children respawned in a loop.
    output = _run_script(
        tmp_path,
        """
        import asyncio, multiprocessing, sys
        from aioexec import AsyncProcessExecutor

        async def main():
            ctx = multiprocessing.get_context(sys.argv[1])
            async with AsyncProcessExecutor(1, mp_context=ctx) as ex:
                print("RESULT", await ex.run(pow, 2, 3))

        asyncio.run(main())
        """,
        start_method,
    )
    assert "if __name__ == '__main__':" in output, output
