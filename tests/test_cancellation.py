"""Cancellation of remote work: running coroutines, queued tasks, asyncio callers, shutdown.

Contract (design.md section 2): ``cancel()`` on a queued task removes it; on a running
coroutine it returns True, the future is CANCELLED at once and the coroutine is cancelled
inside the child (its ``except CancelledError`` block runs); a running plain function cannot
be interrupted, so ``cancel()`` returns False. asyncio callers (``wait_for``, task
cancellation, leaving ``amap`` or ``async with`` early) reach the same mechanism.

Coroutines in the child report what happened through marker files (``tests/faults.py``);
every wait on a marker is bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from pathlib import Path

import faults
import helpers
import pytest

# Bound of every wait for something a child does; far above what it normally takes.
TIMEOUT = 30.0


def _paths(tmp_path: Path, *names: str) -> list[str]:
    return [str(tmp_path / name) for name in names]


def test_cancel_running_coroutine_cancels_the_future_at_once_and_the_child_sees_it(
    make_executor, tmp_path
):
    ex = make_executor(1, child_concurrency=1)
    started, cancelled, release = _paths(tmp_path, "started", "cancelled", "release")
    future = ex.submit(faults.async_wait_for_cancel, started, cancelled, release)
    assert faults.wait_for_path(started, TIMEOUT)
    assert future.running()
    called_back = threading.Event()
    future.add_done_callback(lambda _: called_back.set())

    assert future.cancel() is True
    # The child cannot confirm the cancellation before `release` exists, and it does not yet:
    # the future is cancelled without waiting for the child, and its waiters already woke.
    assert future.cancelled()
    assert called_back.is_set()
    done, _ = concurrent.futures.wait([future], timeout=0)
    assert done == {future}
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(timeout=0)
    # The coroutine's `except CancelledError` block ran in the child.
    assert faults.wait_for_path(cancelled, TIMEOUT)

    # The executor keeps working: the next task gets the slot once the child confirms.
    following = ex.submit(faults.async_identity, "next")
    faults.write_marker(release)
    assert following.result(timeout=TIMEOUT) == "next"


def test_cancel_running_plain_function_returns_false_and_it_completes(make_executor, tmp_path):
    ex = make_executor(1)
    started, release = _paths(tmp_path, "started", "release")
    future = ex.submit(faults.block_until, started, release, "finished")
    assert faults.wait_for_path(started, TIMEOUT)
    assert future.running()

    assert future.cancel() is False
    assert not future.cancelled()
    faults.write_marker(release)
    assert future.result(timeout=TIMEOUT) == "finished"


def test_wait_for_timeout_on_run_in_executor_cancels_the_remote_coroutine(make_executor, tmp_path):
    ex = make_executor(1)
    # Start the child first, so that the timeout below covers the task and not start-up.
    assert ex.submit(faults.async_identity, 0).result(timeout=TIMEOUT) == 0
    started, cancelled = _paths(tmp_path, "started", "cancelled")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # The coroutine would sleep 30 s.
        remote = loop.run_in_executor(ex, faults.async_wait_for_cancel, started, cancelled)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(remote, 1.0)

    asyncio.run(main())
    assert os.path.exists(started)
    assert faults.wait_for_path(cancelled, TIMEOUT)
    assert ex.submit(faults.async_identity, "after").result(timeout=TIMEOUT) == "after"


def test_cancelling_a_task_awaiting_run_cancels_the_remote_coroutine(make_executor, tmp_path):
    ex = make_executor(1)
    started, cancelled = _paths(tmp_path, "started", "cancelled")

    async def main() -> None:
        task = asyncio.ensure_future(ex.run(faults.async_wait_for_cancel, started, cancelled))
        assert await faults.async_wait_for_path(started, TIMEOUT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert faults.wait_for_path(cancelled, TIMEOUT)
    assert ex.submit(faults.async_identity, "after").result(timeout=TIMEOUT) == "after"


def test_breaking_out_of_amap_cancels_started_and_unstarted_work(make_executor, tmp_path):
    # One child running two coroutines at once; amap reads 4 inputs ahead (plus one per step).
    ex = make_executor(1, child_concurrency=2)
    directory = str(tmp_path)

    def marker(name: str, index: int) -> str:
        return os.path.join(directory, f"{name}-{index}")

    async def main() -> list[int]:
        results = []
        async for result in ex.amap(
            faults.async_amap_item, [directory] * 6, range(6), buffersize=4
        ):
            results.append(result)
            # Item 0 is done, so items 1 and 2 hold both slots; 3 and 4 wait in the
            # parent; 5 was never submitted.
            assert await faults.async_wait_for_path(marker("started", 1), TIMEOUT)
            assert await faults.async_wait_for_path(marker("started", 2), TIMEOUT)
            break
        return results

    assert asyncio.run(main()) == [0]
    # Started but not consumed: cancelled inside the child.
    assert faults.wait_for_path(marker("cancelled", 1), TIMEOUT)
    assert faults.wait_for_path(marker("cancelled", 2), TIMEOUT)
    # Not started: never run. Were 3 and 4 still queued, they would take both slots before
    # this task (for 30 s) and it would time out.
    assert ex.submit(faults.async_identity, "after").result(timeout=TIMEOUT) == "after"
    for index in (3, 4, 5):
        assert not os.path.exists(marker("started", index))


@pytest.mark.parametrize("kind", ["coroutine", "function"])
def test_cancelled_queued_task_behind_a_busy_child_never_runs(make_executor, tmp_path, kind):
    coroutine = kind == "coroutine"
    block = faults.async_block_until if coroutine else faults.block_until
    mark = faults.async_mark_run if coroutine else faults.mark_run
    identity = faults.async_identity if coroutine else faults.identity
    ex = make_executor(1, child_concurrency=1)
    started, release, ran = _paths(tmp_path, "started", "release", "victim-ran")
    blocker = ex.submit(block, started, release, "blocker")
    assert faults.wait_for_path(started, TIMEOUT)
    victim = ex.submit(mark, ran, "victim")
    assert not victim.running()

    assert victim.cancel() is True
    assert victim.cancelled()
    faults.write_marker(release)
    assert blocker.result(timeout=TIMEOUT) == "blocker"
    # Queued after the victim: once this ran, the victim would have run before it.
    assert ex.submit(identity, "after").result(timeout=TIMEOUT) == "after"
    assert not os.path.exists(ran)


def test_shutdown_cancel_futures_cancels_queued_work_and_returns_promptly(make_executor, tmp_path):
    ex = make_executor(1, child_concurrency=1)
    started, release = _paths(tmp_path, "started", "release")
    blocker = ex.submit(faults.async_block_until, started, release, "blocker")
    ran = _paths(tmp_path, *(f"ran-{i}" for i in range(20)))
    queued = [ex.submit(faults.async_mark_run, path, i) for i, path in enumerate(ran)]
    assert faults.wait_for_path(started, TIMEOUT)

    faults.write_marker(release)
    began = time.monotonic()
    ex.shutdown(wait=True, cancel_futures=True)
    elapsed = time.monotonic() - began

    assert elapsed < 15, f"shutdown(cancel_futures=True) took {elapsed:.1f} s"
    assert blocker.result(timeout=0) == "blocker"
    assert all(future.done() for future in queued)
    cancelled = [i for i, future in enumerate(queued) if future.cancelled()]
    assert cancelled, "no queued future was cancelled"
    for i, future in enumerate(queued):
        if future.cancelled():
            assert not os.path.exists(ran[i]), f"cancelled task {i} ran"
        else:
            assert future.result(timeout=0) == i


def test_leaving_async_with_because_of_an_exception_cancels_running_coroutine(
    make_executor, tmp_path
):
    ex = make_executor(1)
    started, cancelled = _paths(tmp_path, "started", "cancelled")

    submitted: list[concurrent.futures.Future[str]] = []
    left_at: list[float] = []

    async def use_executor() -> None:
        async with ex:
            # The coroutine would sleep 30 s.
            submitted.append(ex.submit(faults.async_wait_for_cancel, started, cancelled))
            assert await faults.async_wait_for_path(started, TIMEOUT)
            left_at.append(time.monotonic())
            raise RuntimeError("leaving the block")

    async def main() -> float:
        with pytest.raises(RuntimeError, match="leaving the block"):
            await use_executor()
        return time.monotonic() - left_at[0]

    elapsed = asyncio.run(main())
    (future,) = submitted
    assert elapsed < 15, f"leaving the block took {elapsed:.1f} s"
    assert future.cancelled()
    assert faults.wait_for_path(cancelled, TIMEOUT)


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_cancelling_a_task_before_its_first_step_answers_it_and_frees_its_slot(
    make_executor, tmp_path
):
    # A task factory (set by the initializer) makes the child start tasks in its loop's next
    # iteration: a CANCEL read together with its RUN reaches a task whose coroutine never
    # runs, and so could never answer by itself.
    ex = make_executor(1, child_concurrency=2, initializer=helpers.install_recording_task_factory)
    started, release = _paths(tmp_path, "started", "release")
    blocker = ex.submit(helpers.async_block_loop_until, started, release)
    assert faults.wait_for_path(started, TIMEOUT)
    doomed = ex.submit(faults.async_identity, "never")  # its RUN frame waits in the pipe
    assert doomed.cancel()  # and its CANCEL frame right behind it
    faults.write_marker(release)
    assert blocker.result(TIMEOUT) == "unblocked"
    # Both slots are free again: two tasks that wait for each other can run together.
    pair = _paths(tmp_path, "a", "b")
    both = [ex.submit(faults.async_block_until, *pair), ex.submit(faults.async_mark_run, pair[1])]
    assert both[0].result(TIMEOUT) is None
    assert both[1].result(TIMEOUT) is None
    closed = threading.Thread(target=ex.shutdown, daemon=True)
    closed.start()
    closed.join(TIMEOUT)
    assert not closed.is_alive(), "shutdown waited for an answer that never comes"
