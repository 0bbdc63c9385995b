"""The fast path and the batched delivery stay correct when something goes wrong in them:
an interrupted send, a callback that ends the manager thread, a submission from the manager
thread itself, and a task factory installed in the child."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from concurrent.futures import Future

import helpers
import pytest

from aioexec import AsyncProcessExecutor
from aioexec._process import ChildProcess

TIMEOUT = 30


def _shutdown_within(executor: AsyncProcessExecutor, seconds: float) -> bool:
    done = threading.Event()

    def close() -> None:
        executor.shutdown(wait=True)
        done.set()

    threading.Thread(target=close, daemon=True).start()
    return done.wait(seconds)


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_send_interrupted_by_keyboardinterrupt_leaves_the_executor_working(
    make_executor: Callable[..., AsyncProcessExecutor], monkeypatch: pytest.MonkeyPatch
) -> None:
    executor = make_executor(1)
    assert executor.submit(helpers.async_double, 1).result(TIMEOUT) == 2  # a child with room
    real_send_now = ChildProcess.send_now

    def interrupted(self: ChildProcess, pieces: list) -> bool:  # type: ignore[type-arg]
        monkeypatch.setattr(ChildProcess, "send_now", real_send_now)
        raise KeyboardInterrupt

    monkeypatch.setattr(ChildProcess, "send_now", interrupted)
    with pytest.raises(KeyboardInterrupt):
        executor.submit(helpers.async_double, 2)
    # The child whose stream may hold half a frame is replaced; new work runs.
    assert executor.submit(helpers.async_double, 3).result(TIMEOUT) == 6
    assert _shutdown_within(executor, TIMEOUT), "shutdown waited for the interrupted task"


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_callback_that_ends_the_manager_thread_leaves_no_future_pending(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    executor = make_executor(1)
    first = executor.submit(helpers.async_sleep, 0.2, "first")
    others = [executor.submit(helpers.async_sleep, 0.2, i) for i in range(5)]

    def end_the_thread(_: Future[object]) -> None:
        raise SystemExit("a callback that ends the thread it runs in")

    first.add_done_callback(end_the_thread)
    _, pending = concurrent.futures.wait([first, *others], timeout=TIMEOUT)
    assert not pending
    assert first.result() == "first"


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_task_submitted_while_the_manager_unpickles_a_result_runs(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    # Results are unpickled in the manager thread under its lock: a submission from there
    # must be queued, not take the lock again.
    executor = make_executor(1)
    with helpers.submitting_when_unpickled(executor) as submitted:
        assert executor.submit(helpers.async_submits_when_unpickled).result(TIMEOUT) == "rebuilt"
        (future,) = submitted
        assert future.result(TIMEOUT) == 42  # type: ignore[attr-defined]


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_task_factory_set_by_the_initializer_makes_the_tasks(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    executor = make_executor(1, initializer=helpers.install_recording_task_factory)
    assert executor.submit(helpers.async_made_by_task_factory).result(TIMEOUT) is True
    chunked = executor.map(helpers.async_made_by_task_factory_of, range(4), chunksize=4)
    assert list(chunked) == [True] * 4
