"""Lifecycle: children retired and replaced, and nothing left behind when the executor ends.

Contract (design.md sections 2 and 4): a child that reached ``max_tasks_per_child`` is
replaced; shutdown, garbage collection of the executor and interpreter exit never hang and
never leave a process behind; a child exits on its own when its parent dies (no orphans).

Scenarios that end a parent run a script in a subprocess (``python script.py METHOD DIR``);
the script imports ``faults`` from this directory, and reports through files in ``DIR``.
The test never reaps the script's children: they are not its own.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import faults
import helpers
import pytest

import aioexec
from aioexec import AsyncProcessExecutor

# Bound of every wait for something a child does; far above what it normally takes.
TIMEOUT = 30.0
TESTS_DIR = Path(__file__).resolve().parent
# Scripts import the aioexec this process imported, and the helpers of this directory.
SCRIPT_PATH = [str(TESTS_DIR), str(Path(aioexec.__file__).resolve().parent.parent)]


def _start_script(tmp_path: Path, source: str, start_method: str) -> subprocess.Popen[bytes]:
    """Run ``source`` as a script in a new interpreter; its output goes to files in tmp_path."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*SCRIPT_PATH, env.get("PYTHONPATH", "")])
    with open(tmp_path / "stdout", "wb") as out, open(tmp_path / "stderr", "wb") as err:
        return subprocess.Popen(
            [sys.executable, str(script), start_method, str(tmp_path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=tmp_path,
        )


def _wait_for_report(proc: subprocess.Popen[bytes], path: Path, tmp_path: Path) -> str:
    """Wait (bounded) for the script to write ``path``; fail early if the script ends."""
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(
                f"the script did not write {path.name} (exit status {proc.poll()}); stderr:\n"
                + (tmp_path / "stderr").read_text()
            )
        faults.wait_for_path(str(path), 0.1)
    return path.read_text()


@pytest.mark.parametrize("kind", ["coroutine", "function"])
def test_max_tasks_per_child_replaces_children_and_every_task_succeeds(make_executor, kind):
    ex = make_executor(1, max_tasks_per_child=2)
    fn = faults.async_identity if kind == "coroutine" else faults.identity
    pid_fn = faults.async_getpid if kind == "coroutine" else faults.getpid
    futures = [ex.submit(pid_fn) for _ in range(6)]
    pids = [future.result(timeout=TIMEOUT) for future in futures]
    assert all(isinstance(pid, int) for pid in pids)
    assert len(set(pids)) >= 3, pids
    assert ex.submit(fn, "next").result(timeout=TIMEOUT) == "next"


_PARENT_KILLED_SCRIPT = """
    import multiprocessing
    import os
    import sys

    import faults
    from aioexec import AsyncProcessExecutor

    if __name__ == "__main__":
        method, directory = sys.argv[1], sys.argv[2]
        never = os.path.join(directory, "never-written")
        ex = AsyncProcessExecutor(
            2, mp_context=multiprocessing.get_context(method), child_concurrency=4
        )
        # Two long coroutines and two long plain functions (at most one per child).
        for index in range(2):
            ex.submit(faults.async_report_pid_and_wait, directory, index, never)
        for index in range(2, 4):
            ex.submit(faults.report_pid_and_wait, directory, index, never)
        for index in range(4):
            faults.wait_for_path(os.path.join(directory, f"started-{index}"), 30)
        pids = " ".join(str(pid) for pid in ex._processes)
        faults.write_marker(os.path.join(directory, "pids"), pids)
        faults.wait_for_path(never, 60)  # until the test kills us
"""


@pytest.mark.parametrize("start_method", ["forkserver", "spawn", "fork"])
def test_children_exit_when_the_parent_is_sigkilled_while_they_are_busy(start_method, tmp_path):
    proc = _start_script(tmp_path, _PARENT_KILLED_SCRIPT, start_method)
    left: set[int] = set()
    try:
        workers = {int(pid) for pid in _wait_for_report(proc, tmp_path / "pids", tmp_path).split()}
        assert len(workers) == 2
        started = {int((tmp_path / f"started-{i}").read_text()) for i in range(4)}
        assert started == workers
        # Everything the script started: the workers, and the forkserver or resource
        # tracker if any.
        left = faults.descendants(proc.pid)
        assert workers <= left

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(TIMEOUT)
        left = faults.wait_until_gone(left, TIMEOUT)
        assert left == set(), f"still running {TIMEOUT} s after the parent died: {left}"
    finally:
        faults.kill_all(left)
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)


_NO_SHUTDOWN_SCRIPT = """
    import multiprocessing
    import os
    import sys

    import faults
    from aioexec import AsyncProcessExecutor

    if __name__ == "__main__":
        method, directory = sys.argv[1], sys.argv[2]
        ex = AsyncProcessExecutor(2, mp_context=multiprocessing.get_context(method))
        assert ex.submit(faults.async_identity, 0).result(timeout=30) == 0
        faults.write_marker(
            os.path.join(directory, "pids"), " ".join(str(pid) for pid in ex._processes)
        )
        for index in range(20):
            ex.submit(faults.async_mark_run, os.path.join(directory, f"ran-{index}"))
        for index in range(20, 25):
            ex.submit(faults.mark_run, os.path.join(directory, f"ran-{index}"))
        # No shutdown(): the interpreter exits with this work queued.
"""


def test_script_that_never_calls_shutdown_exits_promptly_with_work_queued(start_method, tmp_path):
    proc = _start_script(tmp_path, _NO_SHUTDOWN_SCRIPT, start_method)
    pids: set[int] = set()
    try:
        try:
            returncode = proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the script did not exit within {TIMEOUT} s")
        stderr = (tmp_path / "stderr").read_text()
        assert returncode == 0, stderr
        assert "Traceback" not in stderr, stderr
        pids = {int(pid) for pid in (tmp_path / "pids").read_text().split()}
        assert pids
        pids = faults.wait_until_gone(pids, TIMEOUT)
        assert pids == set(), f"children left behind: {pids}"
        # As with ProcessPoolExecutor, work submitted before exit still ran.
        assert all((tmp_path / f"ran-{index}").exists() for index in range(25))
    finally:
        faults.kill_all(pids)
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)


def test_garbage_collected_open_executor_stops_its_children(start_method):
    ex = AsyncProcessExecutor(2, mp_context=multiprocessing.get_context(start_method))
    assert ex.submit(faults.async_identity, 1).result(timeout=TIMEOUT) == 1
    assert ex.submit(faults.identity, 2).result(timeout=TIMEOUT) == 2
    pids = set(ex._processes)
    manager_thread = ex._executor_manager_thread
    collected = weakref.ref(ex)
    try:
        del ex
        gc.collect()
        assert collected() is None
        manager_thread.join(TIMEOUT)
        assert not manager_thread.is_alive(), "the manager thread did not stop"
        pids = faults.wait_until_gone(pids, TIMEOUT)
        assert pids == set(), f"children left behind: {pids}"
    finally:
        faults.kill_all(pids)


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _wait_for(condition, timeout: float = TIMEOUT) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(faults.POLL_INTERVAL)
    return True


def test_executor_cycles_leave_no_threads_processes_or_fds(start_method):
    ctx = multiprocessing.get_context(start_method)

    def cycle(index: int) -> None:
        ex = AsyncProcessExecutor(1, mp_context=ctx)
        fn = faults.async_identity if index % 2 else faults.identity
        assert ex.submit(fn, index).result(timeout=TIMEOUT) == index
        ex.shutdown(wait=True)

    # The first cycle starts what lives as long as this process (a forkserver, the
    # resource tracker): measure after it.
    cycle(0)
    gc.collect()
    threads = set(threading.enumerate())
    children = set(multiprocessing.active_children())
    processes = faults.descendants(os.getpid())
    fds = _fd_count()

    for index in range(1, 26):
        cycle(index)
    gc.collect()

    assert _wait_for(lambda: not set(threading.enumerate()) - threads), (
        set(threading.enumerate()) - threads
    )
    assert threading.active_count() <= len(threads)
    assert not set(multiprocessing.active_children()) - children
    assert _wait_for(lambda: not faults.descendants(os.getpid()) - processes), (
        faults.descendants(os.getpid()) - processes
    )
    assert _fd_count() <= fds + 3, f"{fds} descriptors before, {_fd_count()} after"


def test_a_task_written_to_a_child_that_just_died_runs_on_another_child(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    """A child killed before the executor noticed: a task sent to it meanwhile finds its pipe
    closed, so it cannot have run there, and it runs on a replacement instead of failing."""
    ex = make_executor(1)
    assert ex.submit(helpers.double, 1).result(TIMEOUT) == 2
    [victim] = ex._processes
    held, holding = threading.Event(), threading.Event()

    def hold_the_manager_thread(_: object) -> None:  # done-callbacks run in that thread
        holding.set()
        held.wait(TIMEOUT)

    ex.submit(helpers.double, 2).add_done_callback(hold_the_manager_thread)
    assert holding.wait(TIMEOUT)
    os.kill(victim, signal.SIGKILL)
    helpers.wait_until(lambda: _is_dead(victim), TIMEOUT)  # the executor is not told yet
    late = ex.submit(helpers.double, 21)  # written by this thread to the dead child's pipe
    held.set()
    assert late.result(TIMEOUT) == 42
    assert victim not in ex._processes


def _is_dead(pid: int) -> bool:
    """Exited, its descriptors closed: gone (a forkserver reaped it), or a zombie whose threads
    have all exited (a zombie leader's other threads still hold its descriptors)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z" and threads == [str(pid)]
