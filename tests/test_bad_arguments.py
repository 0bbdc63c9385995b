"""Bad constructor arguments fail at once, with a message that names the argument and what it
accepts (issue 12, item 6).

``ProcessPoolExecutor`` rejects most of these with a ``TypeError`` or ``ValueError``; here every
one fails at construction (or, for a ``loop_factory`` that misbehaves in the child, on its own
futures), and the message names the argument. The patterns are loose about the wording and
strict about the argument's name. Start-method names are accepted as ``mp_context``.
"""

from __future__ import annotations

import multiprocessing
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import reliability_helpers as rh

from aioexec import AsyncProcessExecutor

# (constructor arguments, exception type, pattern its message must match)
BAD_ARGUMENTS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"max_workers": 2.5}, TypeError, r"max_workers(?s:.*)(?i:\bint)"),
    ({"max_workers": "x"}, TypeError, r"max_workers(?s:.*)(?i:\bint)"),
    ({"max_workers": 0}, ValueError, r"max_workers"),
    ({"max_workers": -1}, ValueError, r"max_workers"),
    ({"child_concurrency": "x"}, TypeError, r"child_concurrency(?s:.*)(?i:\bint)"),
    ({"child_concurrency": 2.5}, TypeError, r"child_concurrency(?s:.*)(?i:\bint)"),
    ({"child_concurrency": 0}, ValueError, r"child_concurrency"),
    ({"initargs": 5}, TypeError, r"initargs(?s:.*)(?i:tuple|iterable|sequence)"),
    ({"initializer": 5}, TypeError, r"initializer(?s:.*)(?i:callable)"),
    ({"mp_context": "nope"}, ValueError, r"mp_context(?s:.*)(?i:spawn|fork|start method)"),
    ({"mp_context": 5}, TypeError, r"mp_context(?s:.*)(?i:context|spawn|fork|start method)"),
    ({"loop_factory": 5}, TypeError, r"loop_factory(?s:.*)(?i:callable)"),
    ({"scheduler": "x"}, ValueError, r"scheduler(?s:.*)least-loaded"),
    ({"fallback": "x"}, ValueError, r"fallback(?s:.*)thread"),
    ({"max_tasks_per_child": 0}, ValueError, r"max_tasks_per_child"),
    ({"max_tasks_per_child": -1}, ValueError, r"max_tasks_per_child"),
    ({"max_tasks_per_child": 1.5}, TypeError, r"max_tasks_per_child(?s:.*)(?i:\bint)"),
]


@pytest.mark.parametrize(
    ("arguments", "error", "pattern"),
    BAD_ARGUMENTS,
    ids=[",".join(f"{k}={v!r}" for k, v in row[0].items()) for row in BAD_ARGUMENTS],
)
def test_a_bad_argument_fails_at_construction_naming_it(
    arguments: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    raised: Exception | None = None
    try:
        ex = AsyncProcessExecutor(**arguments)
    except Exception as exc:
        raised = exc
    if raised is not None:
        assert type(raised) is error, f"{type(raised).__name__}: {raised}"
        assert re.search(pattern, str(raised)), f"{str(raised)!r} does not match {pattern!r}"
        return
    # Accepted: say what it then did with it.
    try:
        future = ex.submit(rh.async_tag, 1)
        outcome: object = future.exception(timeout=rh.TIMEOUT) or future.result()
        processes = len(ex._processes)
    except Exception as exc:
        outcome, processes = f"submit raised {exc!r}", 0
    finally:
        rh.close_bounded(ex)
    pytest.fail(f"accepted; the first task then gave {outcome!r} ({processes} children)")


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_a_start_method_name_is_accepted_as_mp_context(method: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
        ex = AsyncProcessExecutor(1, mp_context=method)  # type: ignore[arg-type]
        try:
            assert ex.submit(rh.async_tag, method).result(timeout=rh.TIMEOUT) == ("tag", method)
            assert ex.submit(rh.triple, 2).result(timeout=rh.TIMEOUT) == 6
        finally:
            assert rh.close_bounded(ex)


@pytest.mark.parametrize(
    "factory",
    [rh.loop_factory_returning_none, rh.loop_factory_returning_a_string, rh.loop_factory_raising],
    ids=["returns-None", "returns-a-string", "raises"],
)
def test_a_loop_factory_that_gives_no_loop_fails_the_futures_naming_loop_factory(
    factory: object,
) -> None:
    ex = AsyncProcessExecutor(
        1, mp_context=multiprocessing.get_context("forkserver"), loop_factory=factory
    )
    try:
        error = ex.submit(rh.async_tag, 1).exception(timeout=rh.TIMEOUT)
    finally:
        closed = rh.close_bounded(ex)
    assert error is not None
    message = str(error)
    assert "loop_factory" in message, message
    # Not the advice for a main module without its guard, nor blame on the initializer.
    assert "__main__" not in message, message
    assert "initializer" not in message, message
    assert closed


_STDIN_SCRIPT = """
    import multiprocessing
    import operator
    import sys

    from aioexec import AsyncProcessExecutor

    if __name__ == "__main__":
        kwargs = {} if sys.argv[1] == "default" else {
            "mp_context": multiprocessing.get_context(sys.argv[1])
        }
        with AsyncProcessExecutor(1, **kwargs) as ex:
            print("result:", ex.submit(operator.neg, 21).result(timeout=30))
"""


@pytest.mark.parametrize("method", ["default", "spawn"])
def test_a_script_piped_on_stdin_works_or_is_told_the_real_cause(
    tmp_path: Path, method: str
) -> None:
    """``python - < script.py``: the script has its ``__main__`` guard, so the advice to add
    one is wrong. It must work, or fail with a message about the main module read from stdin."""
    proc = rh.start_script(tmp_path, _STDIN_SCRIPT, method, stdin_script=True)
    try:
        proc.wait(rh.TIMEOUT)
    finally:
        rh.stop_script(proc)
    stdout = (tmp_path / "stdout").read_text()
    stderr = (tmp_path / "stderr").read_text()
    if proc.returncode == 0:
        assert "result: -21" in stdout, stdout
        return
    assert "__name__ == '__main__'" not in stderr, f"the missing-guard advice:\n{stderr}"
    assert re.search(r"(?i)stdin", stderr.splitlines()[-1]), f"not the real cause:\n{stderr}"
