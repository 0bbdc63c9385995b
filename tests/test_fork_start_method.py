"""The ``fork`` start method works too (it is not the default: a forked child inherits the
parent's threads' locks). A forked child closes the parent's descriptors it inherited (the
other children's pipe ends, the manager's wake-up pipe), so that each child still sees end
of file when the parent dies (``test_lifecycle``), and a child forked after another one does
not keep that one's pipes open."""

from __future__ import annotations

import multiprocessing
import os
import signal
import warnings
from collections.abc import Iterator

import faults
import helpers
import pytest

from aioexec import AsyncProcessExecutor, BrokenWorkerError, RemoteTraceback

TIMEOUT = 30.0


@pytest.fixture
def fork_executor() -> Iterator[AsyncProcessExecutor]:
    from conftest import close_executor

    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a process with threads may deadlock the child.
        warnings.simplefilter("ignore", DeprecationWarning)
        executor = AsyncProcessExecutor(2, mp_context=multiprocessing.get_context("fork"))
        yield executor
    close_executor(executor)


def _start_both_children(ex: AsyncProcessExecutor) -> None:
    """Overlapping tasks: the second child is forked while the first one runs."""
    futures = [ex.submit(helpers.async_sleep, 0.1, i) for i in range(4)]
    assert [f.result(TIMEOUT) for f in futures] == [0, 1, 2, 3]
    assert len(ex._processes) == 2


def test_forked_children_run_coroutines_and_functions_and_report_errors(
    fork_executor: AsyncProcessExecutor,
) -> None:
    ex = fork_executor
    _start_both_children(ex)
    assert ex.submit(helpers.double, 21).result(TIMEOUT) == 42
    error = ex.submit(helpers.raise_value_error, "boom").exception(TIMEOUT)
    assert type(error) is ValueError
    assert isinstance(error.__cause__, RemoteTraceback)


def test_a_killed_forked_child_fails_only_its_task_and_is_replaced(
    fork_executor: AsyncProcessExecutor,
) -> None:
    ex = fork_executor
    assert ex.submit(helpers.async_pid).result(TIMEOUT) in ex._processes
    doomed = ex.submit(faults.async_crash)
    assert type(doomed.exception(TIMEOUT)) is BrokenWorkerError
    # A child forked now inherits the others' descriptors, and closes them.
    pids = {ex.submit(helpers.async_pid).result(TIMEOUT) for _ in range(4)}
    assert pids <= set(ex._processes)
    killed = set(ex._processes)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    assert faults.wait_until_gone(set(pids), TIMEOUT) == set()
    # Until the executor has seen them die, a task may still reach a dying child (whose
    # threads still hold its pipe): wait for that, then the pool must have healed.
    helpers.wait_until(lambda: not killed & set(ex._processes), TIMEOUT)
    assert ex.submit(helpers.double, 4).result(TIMEOUT) == 8


def _pipes_held(pid: int) -> dict[str, set[str]]:
    """pipe:[inode] -> the access modes ("r", "w") in which process ``pid`` holds it."""
    held: dict[str, set[str]] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                flags = int(next(ln for ln in info if ln.startswith("flags:")).split()[1], 8)
        except (OSError, StopIteration):
            continue
        if target.startswith("pipe:"):
            held.setdefault(target, set()).add("w" if flags & os.O_ACCMODE == os.O_WRONLY else "r")
    return held


def test_a_forked_child_holds_only_its_own_ends_of_its_own_pipes(
    fork_executor: AsyncProcessExecutor,
) -> None:
    ex = fork_executor
    _start_both_children(ex)
    children = list(ex._local_engine.manager.pool.children.values())  # type: ignore[union-attr]
    for child in children:
        held = _pipes_held(child.pid)
        for other in children:
            into, out_of = (
                os.readlink(f"/proc/self/fd/{fd}") for fd in (other.write_fd, other.read_fd)
            )
            if other is child:
                # It reads its input and writes its output; with the other ends it would
                # never see end of file when the parent dies.
                assert held.get(into) == {"r"}
                assert held.get(out_of) == {"w"}
            else:
                assert into not in held
                assert out_of not in held
