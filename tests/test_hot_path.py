"""The fast path and the batched delivery stay correct when something goes wrong in them:
an interrupted send, a callback that ends the manager thread, a submission from the manager
thread itself, and a task factory installed in the child."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future

import helpers
import pytest

from aioexec import AsyncProcessExecutor
from aioexec._local.process import ChildProcess
from aioexec._worker.runtime import new_task

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

    def interrupted(self: ChildProcess, pieces: list, task: object) -> bool:  # type: ignore[type-arg]
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


async def _record_steps(log: list[object]) -> None:
    log.append(("first step", asyncio.current_task()))
    await asyncio.sleep(0)
    log.append("resumed")


@pytest.mark.parametrize("factory", [None, asyncio.Task])
@pytest.mark.parametrize("inside_a_task", [False, True])
def test_new_task_starts_a_coroutine_at_once_where_asyncio_allows_it(
    factory: object, inside_a_task: bool
) -> None:
    # What a child does with each task it is sent (Python 3.12+: eager_start; before, the
    # task's own first step run at once): outside a running task and without a task
    # factory, the coroutine has run up to its first suspension when new_task returns.
    loop = asyncio.new_event_loop()
    if factory is not None:
        loop.set_task_factory(lambda loop, coro, **kw: asyncio.Task(coro, loop=loop, **kw))
    log: list[object] = []
    made: list[asyncio.Future[object]] = []
    seen_at_return: list[object] = []

    def make() -> None:
        made.append(new_task(loop, _record_steps(log)))
        seen_at_return.extend(log)

    async def in_a_task() -> None:
        make()

    try:
        if inside_a_task:
            loop.run_until_complete(in_a_task())
        else:  # a plain callback, as a child's reader is
            loop.call_soon(make)
            loop.call_soon(loop.stop)
            loop.run_forever()
        loop.run_until_complete(asyncio.wait_for(made[0], TIMEOUT))
        eager = factory is None and (not inside_a_task or sys.version_info >= (3, 12))
        assert seen_at_return == ([("first step", made[0])] if eager else [])
        assert log == [("first step", made[0]), "resumed"]
    finally:
        loop.close()
