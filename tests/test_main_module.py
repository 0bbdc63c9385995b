"""Functions defined in a ``__main__`` that a child cannot re-import: ``python -c``, a script
read from standard input, a notebook kernel.

A spawn or forkserver child imports the parent's main module again from its file. ``python -c``
and notebook kernels have no such file (``__main__.__file__`` is absent): with cloudpickle
installed, aioexec sends what that ``__main__`` defines by value; without it, the task fails
with ``DeliveryError`` and advice that names both ways out (install the cloudpickle extra, or
move the function into a module). A script read from standard input (``python - < script.py``)
has ``__main__.__file__ == '<stdin>'``, which multiprocessing tries to run again in every
spawn or forkserver child: no such child can start, the executor breaks, and the error says to
run the script from a file or use ``mp_context='fork'``. A fork child inherits ``__main__`` as
it is, so both work with 'fork' without cloudpickle.

Every case runs in a Python subprocess of its own (the point is its ``__main__``), in its own
process group, with a time limit; each subprocess runs one script (``SCRIPT``) that tries every
start method in turn and prints a JSON report, and the tests read that report; a subprocess
that leaves a process behind fails the test. Cloudpickle is hidden from a subprocess by
``sys.modules["cloudpickle"] = None`` before aioexec is imported (``import cloudpickle`` then
fails and ``importlib.util.find_spec`` finds nothing), which is what an environment without it
looks like to aioexec.

The notebook test runs real cells in an ipykernel kernel driven by nbclient, from a cached venv
built at test time (``tests/thirdparty/notebook_runner.py``); it is marked ``thirdparty`` and skips
only when the package index cannot be reached.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from thirdparty import harness, notebook_runner

REPO_ROOT = Path(__file__).resolve().parent.parent
METHODS = ("spawn", "forkserver", "fork")
# One subprocess (three executors; measured 2-5 s), then the wait for its processes to end:
# together below pytest's 60 s, which also bounds the module fixture that runs it.
RUN_LIMIT = 40
LEFTOVER_GRACE = 10

TOKEN = "AIOEXEC_MAIN_MODULE_TEST"  # tags a run's processes, to find what it left behind

# What `python -c CODE METHOD... [hide-cloudpickle]` and `python - METHOD... < script` run.
SCRIPT = textwrap.dedent(
    """\
    import asyncio
    import json
    import multiprocessing
    import os
    import sys

    if "hide-cloudpickle" in sys.argv:
        sys.modules["cloudpickle"] = None  # as if it were not installed

    from aioexec import AsyncProcessExecutor

    LIMIT = 30


    def outcome(call):
        try:
            return {"value": call()}
        except BaseException as exc:
            cause = exc.__cause__
            return {
                "error": type(exc).__name__,
                "message": str(exc),
                "cause": type(cause).__name__ if cause is not None else None,
                "notes": list(getattr(cause, "__notes__", None) or []),
            }


    def double(x):
        return 2 * x, os.getpid()


    async def async_double(x):
        await asyncio.sleep(0)
        return 2 * x, os.getpid()


    class Point:
        def __init__(self, x):
            self.x = x


    def x_of(point):
        return point.x, os.getpid()


    def make_point(x):
        return Point(x)


    class Oops(Exception):
        pass


    def fail(x):
        raise Oops(x)


    main = sys.modules["__main__"]
    reports = {"parent": os.getpid(), "main_file": getattr(main, "__file__", None)}
    for method in [a for a in sys.argv[1:] if a != "hide-cloudpickle"]:
        report = reports[method] = {}
        ctx = multiprocessing.get_context(method)
        with AsyncProcessExecutor(max_workers=1, mp_context=ctx) as ex:
            report["submit"] = outcome(lambda: ex.submit(double, 2).result(LIMIT))
            report["submit_coroutine_function"] = outcome(
                lambda: ex.submit(async_double, 3).result(LIMIT)
            )
            report["run"] = outcome(lambda: asyncio.run(ex.run(async_double, 4)))
            report["map"] = outcome(lambda: list(ex.map(double, range(4), chunksize=2)))
            report["class_argument"] = outcome(lambda: ex.submit(x_of, Point(5)).result(LIMIT))
            report["lambda"] = outcome(
                lambda: ex.submit(lambda x: (x + 1, os.getpid()), 6).result(LIMIT)
            )
            report["class_result"] = outcome(
                lambda: isinstance(ex.submit(make_point, 7).result(LIMIT), Point)
            )
            report["exception_class"] = outcome(lambda: ex.submit(fail, 8).result(LIMIT))

            def defined_late(x):  # a function of __main__ defined after the worker started
                return x, os.getpid()

            report["defined_late"] = outcome(lambda: ex.submit(defined_late, 9).result(LIMIT))
            del defined_late  # a fork child of the next method must not inherit it
            report["importable_after"] = outcome(lambda: ex.submit(os.getpid).result(LIMIT))
    print(json.dumps(reports))
    """
)

# Names both ways out, in aioexec's words.
INSTALL_EXTRA = "pip install 'aioexec-pool[cloudpickle]'"
MOVE_TO_MODULE = "in a module the worker can import"
GUARD_ADVICE = "if __name__ == '__main__'"

# ------------------------------------------------------------------------------ subprocesses


def run_isolated(
    argv: list[str], *, stdin: Any = None, text_input: str | None = None, cwd: Path
) -> dict[str, Any]:
    """Run ``python ARGV`` in its own session, bounded; return its JSON report. Fails the
    test if it hangs, fails, or leaves a process behind."""
    token = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env[TOKEN] = token
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, *argv],
        stdin=subprocess.PIPE if text_input is not None else stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(text_input, timeout=RUN_LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        notebook_runner.reap(TOKEN, token, grace=0)
        pytest.fail(f"python {argv[0]} hung for {RUN_LIMIT} s:\n{out}\n{err[-3000:]}")
    left = notebook_runner.reap(TOKEN, token, LEFTOVER_GRACE)
    assert not left, f"processes left behind (killed): {left}\n{err[-3000:]}"
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{out}\n{err[-3000:]}"
    try:
        return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]
    except (IndexError, ValueError):
        pytest.fail(f"no report:\n{out}\n{err[-3000:]}")


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Any]:
    """``reports(how)``: the report of one way of running SCRIPT, made once per module."""
    made: dict[str, Any] = {}
    cwd = tmp_path_factory.mktemp("main-module")
    script = cwd / "script.py"
    script.write_text(SCRIPT)

    failed: dict[str, str] = {}  # a run that failed fails the other tests at once

    def run(how: str) -> Any:
        hide = ["hide-cloudpickle"] if how.endswith("without-cloudpickle") else []
        args = [*METHODS, *hide]
        if how.startswith("python-c"):
            return run_isolated(["-c", SCRIPT, *args], cwd=cwd)
        if how.startswith("stdin-redirect"):
            with open(script) as stdin:
                return run_isolated(["-", *args], stdin=stdin, cwd=cwd)
        assert how.startswith("stdin-pipe")
        return run_isolated(["-", *args], text_input=SCRIPT, cwd=cwd)

    def get(how: str) -> Any:
        if how in failed:
            pytest.fail(f"the {how} run failed in an earlier test: {failed[how][:2000]}")
        if how not in made:
            try:
                made[how] = run(how)
            except BaseException as exc:  # pytest.fail's exception too
                failed[how] = str(exc)
                raise
        return made[how]

    return get


def ran_in_child(report: dict[str, Any], parent: int, expected: object) -> None:
    assert "error" not in report, report
    value, pid = report["value"]
    assert value == expected
    assert pid != parent


@pytest.fixture
def cloudpickle_installed() -> None:
    pytest.importorskip("cloudpickle")


# ------------------------------------------------------------------------------ python -c


@pytest.mark.usefixtures("cloudpickle_installed")
@pytest.mark.parametrize("method", METHODS)
def test_functions_defined_in_python_c_run_in_a_child(
    reports: Callable[[str], Any], method: str
) -> None:
    everything = reports("python-c")
    assert everything["main_file"] is None  # what makes __main__ unimportable
    parent, report = everything["parent"], everything[method]
    ran_in_child(report["submit"], parent, 4)
    ran_in_child(report["submit_coroutine_function"], parent, 6)
    ran_in_child(report["run"], parent, 8)  # await ex.run(coroutine function)
    assert [value for value, _ in report["map"]["value"]] == [0, 2, 4, 6]
    assert all(pid != parent for _, pid in report["map"]["value"])
    ran_in_child(report["class_argument"], parent, 5)  # an instance of a class of __main__
    assert report["importable_after"]["value"] != parent


@pytest.mark.usefixtures("cloudpickle_installed")
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_function_defined_in_python_c_after_the_child_started_runs_by_value(
    reports: Callable[[str], Any], method: str
) -> None:
    everything = reports("python-c")
    ran_in_child(everything[method]["defined_late"], everything["parent"], 9)


@pytest.mark.usefixtures("cloudpickle_installed")
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_lambda_defined_in_python_c_runs_in_a_child(
    reports: Callable[[str], Any], method: str
) -> None:
    everything = reports("python-c")
    ran_in_child(everything[method]["lambda"], everything["parent"], 7)


@pytest.mark.usefixtures("cloudpickle_installed")
@pytest.mark.parametrize(
    "method",
    [
        "spawn",
        "forkserver",
        "fork",
    ],
)
def test_instance_and_exception_of_classes_defined_in_python_c_come_back(
    reports: Callable[[str], Any], method: str
) -> None:
    report = reports("python-c")[method]
    assert report["class_result"] == {"value": True}  # isinstance(result, Point)
    assert report["exception_class"]["error"] == "Oops", report["exception_class"]


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_function_defined_in_python_c_fails_with_advice_without_cloudpickle(
    reports: Callable[[str], Any], method: str
) -> None:
    everything = reports("python-c-without-cloudpickle")
    report = everything[method]
    for call in ("submit", "submit_coroutine_function", "run", "class_argument", "defined_late"):
        failure = report[call]
        assert failure.get("error") == "DeliveryError", (call, failure)
        assert failure["cause"] == "AttributeError", (call, failure)
        advice = " ".join(failure["notes"])
        assert INSTALL_EXTRA in advice, (call, advice)
        assert MOVE_TO_MODULE in advice, (call, advice)
        assert GUARD_ADVICE not in advice, (call, advice)
    # Only those tasks failed: the executor goes on with what the child can import.
    assert report["importable_after"]["value"] != everything["parent"]


def test_python_c_with_fork_needs_no_cloudpickle(reports: Callable[[str], Any]) -> None:
    everything = reports("python-c-without-cloudpickle")
    parent, report = everything["parent"], everything["fork"]
    ran_in_child(report["submit"], parent, 4)
    ran_in_child(report["run"], parent, 8)
    ran_in_child(report["class_argument"], parent, 5)
    assert report["class_result"] == {"value": True}
    assert report["exception_class"]["error"] == "Oops"


@pytest.mark.parametrize("how", ["python-c", "python-c-without-cloudpickle"])
def test_function_defined_after_a_fork_child_started_fails_with_advice_about_fork(
    reports: Callable[[str], Any], how: str
) -> None:
    failure = reports(how)["fork"]["defined_late"]
    assert failure.get("error") == "DeliveryError", failure
    advice = " ".join(failure["notes"])
    assert "'fork'" in advice, advice
    assert GUARD_ADVICE not in advice, advice
    assert "could not be re-imported" not in advice, advice


# ------------------------------------------------------------------------------ stdin


@pytest.mark.parametrize(
    "how", ["stdin-redirect", "stdin-redirect-without-cloudpickle", "stdin-pipe"]
)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_script_from_stdin_breaks_spawn_and_forkserver_executors_with_accurate_advice(
    reports: Callable[[str], Any], how: str, method: str
) -> None:
    everything = reports(how)
    assert everything["main_file"] == "<stdin>"
    report = everything[method]
    first = report["submit"]
    assert first.get("error") == "BrokenPoolError", first
    message = first["message"]
    assert "'<stdin>'" in message, message
    assert "Run the script from a file" in message, message
    assert "mp_context='fork'" in message, message
    assert GUARD_ADVICE not in message, message
    # Every later call fails at once, saying the same.
    later = report["importable_after"]
    assert later.get("error") == "BrokenPoolError", later
    assert "'<stdin>'" in later["message"]


@pytest.mark.parametrize(
    "how", ["stdin-redirect", "stdin-redirect-without-cloudpickle", "stdin-pipe"]
)
def test_script_from_stdin_runs_with_fork(reports: Callable[[str], Any], how: str) -> None:
    everything = reports(how)
    parent, report = everything["parent"], everything["fork"]
    ran_in_child(report["submit"], parent, 4)
    ran_in_child(report["submit_coroutine_function"], parent, 6)
    ran_in_child(report["run"], parent, 8)
    ran_in_child(report["class_argument"], parent, 5)
    assert report["class_result"] == {"value": True}
    assert report["exception_class"]["error"] == "Oops"


def test_function_defined_in_stdin_script_after_a_fork_child_started_fails_with_advice_about_fork(
    reports: Callable[[str], Any],
) -> None:
    failure = reports("stdin-redirect")["fork"]["defined_late"]
    assert failure.get("error") == "DeliveryError", failure
    advice = " ".join(failure["notes"])
    assert "'fork'" in advice, advice
    assert GUARD_ADVICE not in advice, advice


# ------------------------------------------------------------------------------ a notebook

NOTEBOOK_LIMIT = 120  # the runner: kernel start + cells; measured 5-8 s warm
NOTEBOOK_CELLS = [
    """\
import asyncio, json, os, sys
from aioexec import AsyncProcessExecutor

main = sys.modules["__main__"]
report = {"main_file": getattr(main, "__file__", None), "parent": os.getpid()}
# Cells run in the kernel's event loop (top-level await works).
report["loop_running"] = asyncio.get_running_loop().is_running()""",
    """\
def triple(x):
    return 3 * x, os.getpid()

async def async_triple(x):
    await asyncio.sleep(0)
    return 3 * x, os.getpid()""",
    """\
executors = {m: AsyncProcessExecutor(max_workers=1, mp_context=m) for m in ("forkserver", "spawn")}
for m, ex in executors.items():
    report[m] = {"submit": ex.submit(triple, 2).result(timeout=60)}
    report[m]["submit_coroutine_function"] = ex.submit(async_triple, 3).result(timeout=60)""",
    """\
for m, ex in executors.items():
    report[m]["run"] = await ex.run(async_triple, 4)""",
    """\
class Box:  # defined after the children started
    def __init__(self, value):
        self.value = value

def unbox(box):
    return box.value, os.getpid()

for m, ex in executors.items():
    report[m]["later_cell"] = await asyncio.wrap_future(ex.submit(unbox, Box(5)))""",
    """\
for ex in executors.values():
    ex.shutdown()
print(json.dumps(report))""",
]


@pytest.mark.thirdparty
@pytest.mark.timeout(NOTEBOOK_LIMIT + notebook_runner.VENV_BUILD_LIMIT + 60)
def test_notebook_cells_run_functions_they_define_in_children(tmp_path: Path) -> None:
    try:
        python = notebook_runner.notebook_venv()
    except harness.IndexUnreachableError as exc:
        pytest.skip(str(exc))
    cells = tmp_path / "cells.json"
    cells.write_text(json.dumps(NOTEBOOK_CELLS))
    out = tmp_path / "out.json"
    token = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(notebook_runner.isolated_jupyter_env(tmp_path))
    env[TOKEN] = token
    env["PYTHONPATH"] = str(REPO_ROOT)  # aioexec from this repository, in the kernel too
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [str(python), notebook_runner.__file__, str(cells), str(out)]
    timeout_bin = shutil.which("timeout")
    if timeout_bin is not None:  # SIGINT, then SIGKILL: the runner cannot outlive its limit
        cmd = [timeout_bin, "--signal=INT", "--kill-after=10", str(NOTEBOOK_LIMIT), *cmd]
    started = time.monotonic()
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=NOTEBOOK_LIMIT + 30,
        start_new_session=True,
        check=False,
    )
    seconds = time.monotonic() - started
    # The kernel runs in a session of its own: found by the token it inherited.
    left = notebook_runner.reap(TOKEN, token)
    assert not left, f"processes left behind (killed): {left}"
    assert proc.returncode == 0, f"runner exit {proc.returncode}:\n{proc.stderr[-4000:]}"
    result = json.loads(out.read_text())
    errors = [c["error"] for c in result["cells"] if c["error"]]
    assert not errors, "\n\n".join(errors)
    report = json.loads(result["cells"][-1]["stdout"].splitlines()[-1])
    print(f"notebook: {seconds:.1f} s, {result['seconds']:.1f} s in nbclient")

    assert report["main_file"] is None  # a kernel's __main__ has no file
    assert report["loop_running"]
    parent = report["parent"]
    for method in ("forkserver", "spawn"):
        runs = report[method]
        assert runs["submit"][0] == 6, runs
        assert runs["submit_coroutine_function"][0] == 9, runs
        assert runs["run"][0] == 12, runs
        assert runs["later_cell"][0] == 5, runs
        assert all(pid != parent for _, pid in runs.values()), runs
