"""Type inference of the public API: ``mypy --strict`` accepts ``tests/typing/check_types.py``,
whose ``assert_type`` calls pin what ``submit``, ``run``, ``map`` and ``amap`` return.

Skipped where mypy is not installed (CI installs it in the Python 3.13 venv, which also runs
the same check in its lint step).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECK_FILE = REPO_ROOT / "tests" / "typing" / "check_types.py"

# A wrong expectation: proves that assert_type failures do fail the mypy run.
WRONG_EXPECTATION = """\
from concurrent.futures import Future

from typing_extensions import assert_type

from aioexec import AsyncProcessExecutor


async def coro_fn(x: int) -> int:
    return x


def check(ex: AsyncProcessExecutor) -> None:
    assert_type(ex.submit(coro_fn, 1), Future[str])
"""


@pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None, reason="mypy is not installed in this venv"
)
@pytest.mark.timeout(120)
def test_mypy_infers_the_documented_types(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_expectation.py"
    wrong.write_text(WRONG_EXPECTATION)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            str(CHECK_FILE.relative_to(REPO_ROOT)),
            str(wrong),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    lines = proc.stdout.splitlines()
    errors_in_check_file = [line for line in lines if "check_types.py" in line]
    assert not errors_in_check_file, "\n".join(errors_in_check_file) + proc.stderr
    # The deliberately wrong expectation is reported: the check has teeth.
    assert any("wrong_expectation.py:13" in line and "assert-type" in line for line in lines), (
        proc.stdout + proc.stderr
    )
