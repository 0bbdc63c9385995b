"""The futures ``submit`` returns work with ``concurrent.futures.wait``, ``as_completed`` and
``asyncio.wrap_future``, including when a running coroutine's future is cancelled."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, Future

import helpers
import pytest

from aioexec import AsyncProcessExecutor

TIMEOUT = 30


def test_wait_all_completed_returns_every_future_done(
    shared_executor: AsyncProcessExecutor,
) -> None:
    fs = [shared_executor.submit(helpers.async_double, i) for i in range(20)]
    fs += [shared_executor.submit(helpers.double, i) for i in range(20)]
    done, not_done = concurrent.futures.wait(fs, timeout=TIMEOUT, return_when=ALL_COMPLETED)
    assert not not_done
    assert done == set(fs)
    assert [f.result() for f in fs] == [2 * i for i in range(20)] * 2


def test_wait_first_completed_returns_before_a_slow_task(
    shared_executor: AsyncProcessExecutor,
) -> None:
    slow = shared_executor.submit(helpers.async_sleep, 60)
    fast = shared_executor.submit(helpers.async_double, 5)
    try:
        done, not_done = concurrent.futures.wait(
            [slow, fast], timeout=TIMEOUT, return_when=FIRST_COMPLETED
        )
        assert fast in done
        assert slow in not_done
    finally:
        slow.cancel()


def test_wait_first_exception_returns_on_a_failed_task(
    shared_executor: AsyncProcessExecutor,
) -> None:
    slow = shared_executor.submit(helpers.async_sleep, 60)
    failing = shared_executor.submit(helpers.async_raise_value_error, "fails first")
    try:
        done, _ = concurrent.futures.wait(
            [slow, failing], timeout=TIMEOUT, return_when=FIRST_EXCEPTION
        )
        assert done == {failing}
        assert isinstance(failing.exception(), ValueError)
    finally:
        slow.cancel()


def test_wait_wakes_when_a_running_coroutine_is_cancelled(
    shared_executor: AsyncProcessExecutor,
) -> None:
    slow = shared_executor.submit(helpers.async_sleep, 60)
    # Wait until the task runs in a child, so that cancel() reaches a running coroutine.
    probe = shared_executor.submit(helpers.async_double, 1)
    probe.result(TIMEOUT)
    assert slow.cancel()
    done, not_done = concurrent.futures.wait([slow], timeout=TIMEOUT)
    assert done == {slow}
    assert not not_done
    assert slow.cancelled()


def test_as_completed_yields_fast_results_before_slow_ones(
    shared_executor: AsyncProcessExecutor,
) -> None:
    slow = shared_executor.submit(helpers.async_sleep, 60, "slow")
    fast = [shared_executor.submit(helpers.async_sleep, 0, i) for i in range(10)]
    fast.append(shared_executor.submit(helpers.double, 21))
    order: list[Future[object]] = []
    try:
        for future in concurrent.futures.as_completed([slow, *fast], timeout=TIMEOUT):
            order.append(future)
            if len(order) == len(fast):
                slow.cancel()  # the last future as_completed yields is then the cancelled one
    finally:
        slow.cancel()
    assert set(order[: len(fast)]) == set(fast)
    assert order[-1] is slow
    assert slow.cancelled()
    assert sorted(f.result() for f in fast[:-1]) == list(range(10))  # type: ignore[type-var]
    assert fast[-1].result() == 42


def test_as_completed_raises_timeout_error_for_unfinished_work(
    shared_executor: AsyncProcessExecutor,
) -> None:
    slow = shared_executor.submit(helpers.async_sleep, 60)
    try:
        with pytest.raises(concurrent.futures.TimeoutError):
            for _ in concurrent.futures.as_completed([slow], timeout=0.5):
                pass
    finally:
        slow.cancel()


def test_wrap_future_awaits_results_and_exceptions_in_a_loop(
    shared_executor: AsyncProcessExecutor,
) -> None:
    async def main() -> None:
        wrapped = [
            asyncio.wrap_future(shared_executor.submit(helpers.async_double, i)) for i in range(10)
        ]
        wrapped.append(asyncio.wrap_future(shared_executor.submit(helpers.double, 50)))
        results = await asyncio.wait_for(asyncio.gather(*wrapped), TIMEOUT)
        assert results == [2 * i for i in range(10)] + [100]
        failing = asyncio.wrap_future(
            shared_executor.submit(helpers.raise_value_error, "through wrap_future")
        )
        with pytest.raises(ValueError, match="through wrap_future"):
            await asyncio.wait_for(failing, TIMEOUT)

    asyncio.run(main())


def test_wrap_future_cancelled_by_its_awaiter_cancels_the_task(
    shared_executor: AsyncProcessExecutor,
) -> None:
    future = shared_executor.submit(helpers.async_sleep, 60)

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.wrap_future(future), 0.5)

    asyncio.run(main())
    concurrent.futures.wait([future], timeout=TIMEOUT)
    assert future.cancelled()


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_child_death_after_a_running_coroutine_was_cancelled_leaves_the_executor_working(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    ex = make_executor(1)
    victim = ex.submit(helpers.async_sleep_then_block_when_cancelled, 60)
    ex.submit(helpers.async_double, 1).result(TIMEOUT)  # same child: victim runs by now
    assert victim.cancel()
    assert victim.cancelled()
    # The child blocks instead of confirming the cancellation, and dies.
    (pid,) = ex._processes
    os.kill(pid, signal.SIGKILL)
    # Wait until the manager has noticed the death (a task sent before that would get
    # BrokenWorkerError, rightly); then the executor goes on with a new child.
    deadline = time.monotonic() + TIMEOUT
    while pid in ex._processes:
        assert time.monotonic() < deadline, "the manager did not notice the child's death"
        time.sleep(0.01)
    assert ex.submit(helpers.async_double, 2).result(TIMEOUT) == 4
    assert victim.cancelled()


def test_a_done_callback_may_submit_more_work(shared_executor: AsyncProcessExecutor) -> None:
    # Callbacks run in the manager thread, after it released its lock: submitting from one
    # must neither deadlock nor be refused.
    chained: Future[Future[int]] = Future()

    def submit_next(done: Future[int]) -> None:
        chained.set_result(shared_executor.submit(helpers.async_double, done.result()))

    shared_executor.submit(helpers.async_double, 5).add_done_callback(submit_next)
    assert chained.result(TIMEOUT).result(TIMEOUT) == 20


def test_many_event_loops_in_threads_each_get_their_own_results(
    shared_executor: AsyncProcessExecutor,
) -> None:
    async def gather_doubles(base: int) -> list[int]:
        loop = asyncio.get_running_loop()
        calls = [
            loop.run_in_executor(shared_executor, helpers.async_double, base + i)
            for i in range(200)
        ]
        return await asyncio.wait_for(asyncio.gather(*calls), TIMEOUT)

    with concurrent.futures.ThreadPoolExecutor(3) as threads:
        runs = [threads.submit(asyncio.run, gather_doubles(1000 * k)) for k in range(3)]
        for k, run in enumerate(runs):
            assert run.result(TIMEOUT) == [2 * (1000 * k + i) for i in range(200)]


def test_a_result_for_an_event_loop_that_closed_meanwhile_is_dropped_quietly(
    shared_executor: AsyncProcessExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    started: list[asyncio.Future[object]] = []

    async def leave_without_awaiting() -> None:
        # A plain function cannot be cancelled once it runs: it finishes after the loop closed.
        loop = asyncio.get_running_loop()
        started.append(loop.run_in_executor(shared_executor, helpers.sleep, 0.3, "late"))
        await asyncio.sleep(0.1)

    asyncio.run(leave_without_awaiting())
    assert shared_executor.submit(helpers.double, 21).result(TIMEOUT) == 42
    concurrent.futures.wait(
        [shared_executor.submit(helpers.sleep, 0.3) for _ in range(2)], timeout=TIMEOUT
    )
    assert "manager thread failed" not in caplog.text
    assert shared_executor.submit(helpers.async_double, 4).result(TIMEOUT) == 8


def test_a_coroutine_knows_its_task_from_its_first_step(
    shared_executor: AsyncProcessExecutor,
) -> None:
    # On 3.12+ tasks start eagerly in the child; asyncio.current_task() must still work.
    assert shared_executor.submit(helpers.async_has_current_task).result(TIMEOUT) is True
