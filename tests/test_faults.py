"""Faults: a child that dies, and errors, exits and crashes at each step of a task's trip.

Contract (design.md section 1): a task whose child dies (signal, ``os._exit``, crash) fails
with ``aioexec.BrokenWorkerError`` (a ``BrokenProcessPool``) naming the pid and the exit code
or signal; only that child's tasks get it and the executor goes on with a new child. A
task's exception comes back with its own type; pickling failures reach only the future
concerned, with a message that names the object.

The fault matrix follows CPython's ``test_deadlock.py`` (helpers in ``tests/faults.py``):
every fault at every step, for coroutine functions and plain functions. Each cell submits
the bad task and, together with it, a good one that must succeed, then a third task that
shows the executor is still usable. The matrix shares one executor per start method (two
children with one slot each, so the good task never shares the bad task's child): starting
children dominates the time these tests take, and the shared executor also shows that a
long series of faults leaves it healthy.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import faults
import pytest

from aioexec import AsyncProcessExecutor, BrokenWorkerError, DeliveryError, RemoteTraceback

# Bound of every wait for something a child does; far above what it normally takes.
TIMEOUT = 30.0


def _text(exc: BaseException) -> str:
    """The message of ``exc`` with its notes, as a traceback would show them."""
    return "\n".join([str(exc), *getattr(exc, "__notes__", ())])


def _started_pids(directory: Path, count: int) -> dict[int, int]:
    """Wait for ``started-<i>`` markers 0..count-1; return index -> pid written in each."""
    pids = {}
    for index in range(count):
        path = directory / f"started-{index}"
        assert faults.wait_for_path(str(path), TIMEOUT), f"task {index} did not start"
        pids[index] = int(path.read_text())
    return pids


# -- a dying child ----------------------------------------------------------------------------


def test_sigkill_of_one_child_fails_only_that_childs_tasks(make_executor, tmp_path):
    ex = make_executor(2, child_concurrency=4)
    release = str(tmp_path / "release")
    futures = [
        ex.submit(faults.async_report_pid_and_wait, str(tmp_path), index, release)
        for index in range(8)
    ]
    where = _started_pids(tmp_path, 8)
    pids = sorted(set(where.values()))
    assert len(pids) == 2
    victim, survivor = pids
    assert sorted(where.values()).count(victim) == 4

    os.kill(victim, signal.SIGKILL)
    for index, future in enumerate(futures):
        if where[index] == victim:
            exc = future.exception(timeout=TIMEOUT)
            assert type(exc) is BrokenWorkerError
            assert isinstance(exc, BrokenProcessPool)
            assert str(victim) in str(exc)
            assert "SIGKILL" in str(exc)
    faults.write_marker(release)
    for index, future in enumerate(futures):
        if where[index] == survivor:
            assert future.result(timeout=TIMEOUT) == (index, survivor)
    assert ex.submit(faults.async_identity, "next").result(timeout=TIMEOUT) == "next"


def test_os_exit_in_a_plain_function_fails_only_that_task(make_executor, tmp_path):
    ex = make_executor(2)
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    # In flight on the other child while the bad task's child dies (one plain function at a
    # time per child, so the two cannot share a child).
    good = ex.submit(faults.block_until, started, release, "good")
    assert faults.wait_for_path(started, TIMEOUT)
    bad = ex.submit(faults.os_exit)

    exc = bad.exception(timeout=TIMEOUT)
    assert isinstance(exc, BrokenWorkerError)
    assert isinstance(exc, BrokenProcessPool)
    assert "exited with code 3" in str(exc)
    faults.write_marker(release)
    assert good.result(timeout=TIMEOUT) == "good"
    assert ex.submit(faults.identity, "next").result(timeout=TIMEOUT) == "next"


@pytest.mark.parametrize(
    ("bad_argument", "how"),
    [
        pytest.param(faults.OsExitAtUnpickle(), "exited with code 3", id="os-exit"),
        pytest.param(faults.CrashAtUnpickle(), "was killed by SIGSEGV", id="sigsegv"),
    ],
)
def test_child_killed_while_unpickling_an_argument_fails_only_that_task(
    make_executor, tmp_path, bad_argument, how
):
    ex = make_executor(2, child_concurrency=1)
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    good = ex.submit(faults.async_block_until, started, release, "good")
    assert faults.wait_for_path(started, TIMEOUT)
    bad = ex.submit(faults.async_identity, bad_argument)

    exc = bad.exception(timeout=TIMEOUT)
    assert isinstance(exc, BrokenWorkerError)
    assert isinstance(exc, BrokenProcessPool)
    assert how in str(exc)
    faults.write_marker(release)
    assert good.result(timeout=TIMEOUT) == "good"
    assert ex.submit(faults.async_identity, "next").result(timeout=TIMEOUT) == "next"


@pytest.mark.parametrize("method", ["terminate_workers", "kill_workers"])
def test_terminate_or_kill_workers_stops_a_child_stuck_in_a_blocking_function(
    make_executor, tmp_path, method
):
    ex = make_executor(1)
    started, never = str(tmp_path / "started"), str(tmp_path / "never-written")
    stuck = ex.submit(faults.block_until, started, never)
    assert faults.wait_for_path(started, TIMEOUT)
    pids = list(ex._processes)

    getattr(ex, method)()
    exc = stuck.exception(timeout=TIMEOUT)
    assert isinstance(exc, BrokenProcessPool)
    assert ("SIGTERM" if method == "terminate_workers" else "SIGKILL") in str(exc)
    shutdown = threading.Thread(target=ex.shutdown, kwargs={"wait": True})
    shutdown.start()
    shutdown.join(TIMEOUT)
    assert not shutdown.is_alive(), "shutdown() did not return"
    assert faults.wait_until_gone(pids, TIMEOUT) == set()


# -- the fault matrix -------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One cell of the matrix: what to submit and what the bad task's future must hold."""

    coroutine: Callable[..., object]  # the coroutine-function form of the bad task
    function: Callable[..., object]  # the plain-function form
    args: tuple[object, ...]
    expected: type[BaseException]  # exact type of the bad future's exception
    says: str = ""  # a phrase its message or notes contain
    from_child: bool = False  # an exception raised in the child: RemoteTraceback cause
    raised_by_submit: bool = False  # submit() itself raises (no future is made)
    cause: type[BaseException] | None = None  # the type of __cause__, if checked


_IDENTITY = (faults.async_identity, faults.identity)
_RETURN = (faults.async_return_instance, faults.return_instance)

FAULTS = [
    # Argument pickling happens in the caller's thread, inside submit(). There is no crash
    # cell for it (nor for result unpickling, in the manager thread): a segfault there
    # would kill the test process itself, not a child.
    # With fallback="error", a pickling error fails the returned future.
    pytest.param(
        Fault(
            *_IDENTITY,
            (faults.ErrorAtPickle(),),
            pickle.PicklingError,
            "could not pickle positional argument 0",
        ),
        id="error-at-task-pickle",
    ),
    # SystemExit is not an error: submit() lets it propagate to its caller, like any call
    # that runs user code in the caller's thread.
    pytest.param(
        Fault(*_IDENTITY, (faults.ExitAtPickle(),), SystemExit, raised_by_submit=True),
        id="exit-at-task-pickle",
    ),
    # Unpickling failures are DeliveryError (a BrokenProcessPool, as ProcessPoolExecutor
    # reports them) whose cause is the original error; unlike there, only the task fails.
    pytest.param(
        Fault(
            *_IDENTITY,
            (faults.ErrorAtUnpickle(),),
            DeliveryError,
            "could not unpickle this task's function or arguments",
            cause=pickle.UnpicklingError,
        ),
        id="error-at-task-unpickle",
    ),
    # SystemExit while unpickling a task fails only that task (ProcessPoolExecutor loses the
    # worker and every task with it): the child and its other tasks go on.
    pytest.param(
        Fault(
            *_IDENTITY,
            (faults.ExitAtUnpickle(),),
            DeliveryError,
            "could not unpickle this task's function or arguments",
            cause=SystemExit,
        ),
        id="exit-at-task-unpickle",
    ),
    pytest.param(
        Fault(
            *_IDENTITY,
            (faults.CrashAtUnpickle(),),
            BrokenWorkerError,
            "was killed by SIGSEGV while running this task",
        ),
        id="crash-at-task-unpickle",
    ),
    pytest.param(
        Fault(
            faults.async_raise_error,
            faults.raise_error,
            (RuntimeError,),
            RuntimeError,
            "induced error",
            from_child=True,
        ),
        id="error-during-func-exec",
    ),
    # A task's SystemExit is its outcome (as in ProcessPoolExecutor): the child lives on.
    pytest.param(
        Fault(faults.async_exit, faults.exit_, (), SystemExit, from_child=True),
        id="exit-during-func-exec",
    ),
    pytest.param(
        Fault(
            faults.async_crash,
            faults.crash,
            (),
            BrokenWorkerError,
            "was killed by SIGSEGV while running this task",
        ),
        id="crash-during-func-exec",
    ),
    pytest.param(
        Fault(
            *_RETURN,
            (faults.ErrorAtPickle,),
            pickle.PicklingError,
            "could not be pickled in the worker",
            from_child=True,
        ),
        id="error-during-result-pickle",
    ),
    pytest.param(
        Fault(
            *_RETURN,
            (faults.ExitAtPickle,),
            SystemExit,
            "could not be pickled in the worker",
            from_child=True,
        ),
        id="exit-during-result-pickle",
    ),
    pytest.param(
        Fault(
            *_RETURN,
            (faults.CrashAtPickle,),
            BrokenWorkerError,
            "was killed by SIGSEGV while running this task",
        ),
        id="crash-during-result-pickle",
    ),
    pytest.param(
        Fault(
            *_RETURN,
            (faults.ErrorAtUnpickle,),
            DeliveryError,
            "could not be unpickled in the parent",
            cause=pickle.UnpicklingError,
        ),
        id="error-at-result-unpickle",
    ),
    # Result unpickling runs in the manager thread: a SystemExit there fails only the future.
    pytest.param(
        Fault(
            *_RETURN,
            (faults.ExitAtUnpickle,),
            DeliveryError,
            "could not be unpickled in the parent",
            cause=SystemExit,
        ),
        id="exit-at-result-unpickle",
    ),
]


@pytest.fixture(scope="module", params=["forkserver", "spawn"])
def fault_executor(request: pytest.FixtureRequest) -> Iterator[AsyncProcessExecutor]:
    """Two children with one task slot each; argument pickling errors fail the future."""
    executor = AsyncProcessExecutor(
        2,
        mp_context=multiprocessing.get_context(request.param),
        child_concurrency=1,
        fallback="error",
    )
    yield executor
    executor.kill_workers()
    executor.shutdown(wait=True)


@pytest.mark.parametrize("kind", ["coroutine", "function"])
@pytest.mark.parametrize("fault", FAULTS)
def test_fault_fails_only_its_own_future(fault_executor, fault, kind):
    ex = fault_executor
    bad_fn = fault.coroutine if kind == "coroutine" else fault.function
    good_fn = faults.async_identity if kind == "coroutine" else faults.identity

    if fault.raised_by_submit:
        with pytest.raises(fault.expected):
            ex.submit(bad_fn, *fault.args)
        bad = None
    else:
        bad = ex.submit(bad_fn, *fault.args)
    good = ex.submit(good_fn, "good")

    if bad is not None:
        _check_fault_error(bad.exception(timeout=TIMEOUT), fault)
    assert good.result(timeout=TIMEOUT) == "good"
    assert ex.submit(good_fn, "still usable").result(timeout=TIMEOUT) == "still usable"


@pytest.mark.parametrize("kind", ["coroutine", "function"])
@pytest.mark.parametrize("fault", [cell for cell in FAULTS if not cell.values[0].raised_by_submit])
def test_fault_reaches_a_run_in_executor_awaiter_the_same_way(fault_executor, fault, kind):
    # The same matrix through asyncio's run_in_executor, whose future aioexec completes in
    # the event loop (aioexec/_future.py's LoopFuture) rather than through wrap_future.
    ex = fault_executor
    bad_fn = fault.coroutine if kind == "coroutine" else fault.function
    good_fn = faults.async_identity if kind == "coroutine" else faults.identity

    async def main() -> tuple[BaseException | None, object]:
        loop = asyncio.get_running_loop()
        bad = loop.run_in_executor(ex, bad_fn, *fault.args)
        good = loop.run_in_executor(ex, good_fn, "good")
        try:
            await asyncio.wait_for(bad, TIMEOUT)
        except BaseException as exc:  # SystemExit included: it is the task's outcome
            error = exc
        else:
            error = None
        return error, await asyncio.wait_for(good, TIMEOUT)

    error, good = asyncio.run(main())
    _check_fault_error(error, fault)
    assert good == "good"
    assert ex.submit(good_fn, "still usable").result(timeout=TIMEOUT) == "still usable"


def _check_fault_error(exc: BaseException | None, fault: Fault) -> None:
    assert type(exc) is fault.expected, f"{type(exc).__name__}: {_text(exc)}"
    assert fault.says in _text(exc)
    if fault.from_child:
        assert isinstance(exc.__cause__, RemoteTraceback)
    if fault.cause is not None:
        assert type(exc.__cause__) is fault.cause
        assert isinstance(exc, BrokenProcessPool)
    if fault.expected is BrokenWorkerError:
        assert isinstance(exc, BrokenProcessPool)
        assert "child process" in str(exc)
