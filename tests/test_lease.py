"""An event loop's lease on the answers (``aioexec/_local/lease.py``): the loop reads them itself
while it alone waits, and gives the pipes back to the manager thread whenever anyone else
may wait, so that a busy, blocked, stopped or closed loop never holds up anyone else."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import faults
import helpers
import pytest

from aioexec import AsyncProcessExecutor, BrokenWorkerError
from aioexec._front.completion import Completions
from aioexec._front.futures import TaskFuture
from aioexec._local.process import ChildProcess

TIMEOUT = 30


async def take_lease(executor: AsyncProcessExecutor) -> None:
    """Await calls one by one until this loop holds the lease on every child and the manager
    thread has stopped watching their pipes (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        assert await loop.run_in_executor(executor, helpers.async_double, 1) == 2
        if holds_lease(executor, loop):
            return
    raise AssertionError("the loop never got the lease")


def holds_lease(executor: AsyncProcessExecutor, loop: asyncio.AbstractEventLoop) -> bool:
    manager = executor._local_engine.manager
    assert manager is not None
    lease = manager.lease.current
    children = manager.pool.children
    return (
        lease is not None
        and lease.loop is loop
        and lease.child_ids == children.keys()
        and not any(child.watched for child in children.values())
    )


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_loop_awaiting_alone_reads_the_answers_itself(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    executor = make_executor(2)

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        await take_lease(executor)
        results = [await loop.run_in_executor(executor, helpers.async_double, i) for i in range(50)]
        assert holds_lease(executor, loop)
        # More plain functions than slots: queued work ends the lease; an idle moment
        # starts a new one.
        results += await asyncio.gather(*(executor.run(helpers.double, i) for i in range(8)))
        await take_lease(executor)
        return results

    assert asyncio.run(main()) == [2 * i for i in range(50)] + [2 * i for i in range(8)]


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_a_blocking_result_in_the_loop_thread_ends_the_lease(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    executor = make_executor(1)

    async def main() -> object:
        await take_lease(executor)
        # Blocks the loop: only the manager thread can read this answer now.
        return executor.submit(helpers.async_sleep, 0.05, "answered").result(TIMEOUT)

    assert asyncio.run(main()) == "answered"


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_another_thread_waiting_while_the_loop_is_blocked_gets_its_answer(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    executor = make_executor(1)
    got: list[object] = []
    answered = threading.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await take_lease(executor)
        future = executor.submit(helpers.async_sleep, 0.1, "for the other thread")
        assert holds_lease(executor, loop)

        def wait_in_another_thread() -> None:
            got.append(future.result(TIMEOUT))
            answered.set()

        threading.Thread(target=wait_in_another_thread, daemon=True).start()
        # The loop's thread blocks until the other thread has the answer that arrives on a
        # pipe this loop was reading.
        assert answered.wait(TIMEOUT)

    asyncio.run(main())
    assert got == ["for the other thread"]


@pytest.mark.parametrize("wait", ["wait", "as_completed"])
@pytest.mark.parametrize("start_method", ["forkserver"])
def test_wait_and_as_completed_in_the_loop_thread_end_the_lease(
    make_executor: Callable[..., AsyncProcessExecutor], wait: str
) -> None:
    executor = make_executor(1)

    async def main() -> object:
        await take_lease(executor)
        future = executor.submit(helpers.async_sleep, 0.05, "done")
        if wait == "wait":
            done, _ = concurrent.futures.wait([future], timeout=TIMEOUT)
            assert done == {future}
        else:
            assert list(concurrent.futures.as_completed([future], timeout=TIMEOUT)) == [future]
        return future.result()

    assert asyncio.run(main()) == "done"


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_polling_done_after_the_lease_loop_closed_sees_the_answer(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    executor = make_executor(1)

    async def main() -> Future[object]:
        await take_lease(executor)
        return executor.submit(helpers.async_sleep, 0.05, "late")

    future = asyncio.run(main())  # the loop closes; nothing awaited the future there
    deadline = time.monotonic() + TIMEOUT
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert future.result(0) == "late"


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_work_submitted_by_a_lease_loop_that_then_stops_runs_anyway(
    make_executor: Callable[..., AsyncProcessExecutor], tmp_path: Path
) -> None:
    # Nothing waits on the futures: the tasks' side effects are what the caller waits for.
    executor = make_executor(1, child_concurrency=1)
    paths = [str(tmp_path / str(i)) for i in range(3)]

    async def main() -> None:
        await take_lease(executor)
        for path in paths:
            executor.submit(helpers.write_file, path)

    asyncio.run(main())
    deadline = time.monotonic() + TIMEOUT
    while not all(map(os.path.exists, paths)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(map(os.path.exists, paths))


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_plain_callback_still_runs_in_the_manager_thread(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    executor = make_executor(1)
    ran_in: list[str] = []
    ran = threading.Event()

    def callback(_: Future[object]) -> None:
        ran_in.append(threading.current_thread().name)
        ran.set()

    async def main() -> object:
        await take_lease(executor)
        future = executor.submit(helpers.async_sleep, 0.05, "value")
        future.add_done_callback(callback)
        return await asyncio.wrap_future(future)

    assert asyncio.run(main()) == "value"
    assert ran.wait(TIMEOUT)
    assert ran_in[0].startswith("aioexec-manager")


def test_a_lease_loop_posts_plain_callbacks_and_completes_its_own_futures() -> None:
    # The race behind the previous test: a plain callback added after the loop read the
    # answer. Deliver, as the loop does, and check what runs where.
    posted: list[object] = []
    ran: list[str] = []

    async def main() -> object:
        loop = asyncio.get_running_loop()
        future: TaskFuture[object] = TaskFuture(None)
        future.set_running_or_notify_cancel()
        awaited = asyncio.wrap_future(future)
        future.add_done_callback(lambda _: ran.append("plain"))
        completions = Completions()
        completions.result(future, "value")
        completions.deliver(loop, posted.append)
        assert awaited.done(), "the loop's own future completes at once, in its thread"
        assert ran == [], "a plain callback does not run in the loop's thread"
        return awaited.result()

    assert asyncio.run(main()) == "value"
    [elsewhere] = posted
    assert isinstance(elsewhere, Completions)
    elsewhere.deliver()  # what the manager thread does with it
    assert ran == ["plain"]


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_closed_lease_loop_holds_up_no_one_and_leaks_no_descriptor(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    executor = make_executor(2)
    assert executor.submit(helpers.double, 1).result(TIMEOUT) == 2
    before = open_descriptors()
    asyncio.run(take_lease(executor))  # leaves the lease with a closed loop
    assert executor.submit(helpers.async_double, 4).result(TIMEOUT) == 8
    deadline = time.monotonic() + TIMEOUT
    while open_descriptors() > before and time.monotonic() < deadline:
        gc.collect()
        executor.submit(helpers.double, 1).result(TIMEOUT)
    assert open_descriptors() == before


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_stopped_lease_loop_holds_up_no_other_thread(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    executor = make_executor(1)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(take_lease(executor))
        # The loop is stopped, not closed, and still has its readers.
        with concurrent.futures.ThreadPoolExecutor(1) as other:
            assert other.submit(lambda: executor.submit(helpers.double, 5).result(TIMEOUT)).result(
                TIMEOUT
            )
        assert loop.run_until_complete(executor.run(helpers.async_double, 3)) == 6
    finally:
        loop.close()


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_child_dying_under_a_lease_fails_only_its_task(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    executor = make_executor(1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await take_lease(executor)
        with pytest.raises(BrokenWorkerError):
            await loop.run_in_executor(executor, faults.async_crash)
        # A new child; the loop's next lease covers it.
        await take_lease(executor)
        assert await loop.run_in_executor(executor, helpers.async_double, 21) == 42

    asyncio.run(main())


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_tasks_recycled_by_max_tasks_per_child_under_a_lease(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    executor = make_executor(1, max_tasks_per_child=3)

    async def main() -> set[int]:
        loop = asyncio.get_running_loop()
        return {await loop.run_in_executor(executor, helpers.async_pid) for _ in range(12)}

    assert len(asyncio.run(main())) == 4


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_cancelled_await_under_a_lease_frees_its_slot(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    executor = make_executor(1, child_concurrency=1)

    async def main() -> object:
        loop = asyncio.get_running_loop()
        await take_lease(executor)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.run_in_executor(executor, helpers.async_sleep, 60), 0.1)
        # The only slot is free again once the child confirms the cancellation.
        return await asyncio.wait_for(executor.run(helpers.async_double, 5), TIMEOUT)

    assert asyncio.run(main()) == 10


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_an_answer_unpickled_by_the_lease_loop_may_submit(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    # The loop unpickles answers under the manager's lock, as the manager thread does: a
    # submission from there must be queued, not take the lock again.
    executor = make_executor(1)

    async def main() -> object:
        loop = asyncio.get_running_loop()
        await take_lease(executor)
        return await loop.run_in_executor(executor, helpers.async_submits_when_unpickled)

    with helpers.submitting_when_unpickled(executor) as submitted:
        assert asyncio.run(main()) == "rebuilt"
        (future,) = submitted
        assert future.result(TIMEOUT) == 42  # type: ignore[attr-defined]


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_shutdown_from_the_lease_loop_waits_for_its_tasks(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    executor = make_executor(1)

    async def main() -> Any:
        await take_lease(executor)
        future = executor.submit(helpers.async_sleep, 0.1, "finished")
        executor.shutdown(wait=True)  # blocks the loop; the manager thread reads the answer
        return future.result(0)

    assert asyncio.run(main()) == "finished"


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_burst_from_the_lease_loop_is_queued_for_the_manager_and_the_lease_comes_back(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    executor = make_executor(2, child_concurrency=2)

    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        await take_lease(executor)
        burst = [executor.submit(helpers.async_sleep, 0.001, i) for i in range(60)]
        for future in burst[30:]:  # still queued: they never run
            assert future.cancel()
        results = await asyncio.gather(*(asyncio.wrap_future(f) for f in burst[:30]))
        results += await asyncio.gather(
            *(loop.run_in_executor(executor, helpers.async_double, i) for i in range(200))
        )
        # Queued work ended the lease (the manager thread sends it as answers free the
        # slots); the next idle moment starts a new one.
        await take_lease(executor)
        assert holds_lease(executor, loop)
        return results

    assert asyncio.run(main()) == list(range(30)) + [2 * i for i in range(200)]


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_read_interrupted_in_the_lease_loop_stops_only_that_child(
    make_executor: Callable[..., AsyncProcessExecutor], monkeypatch: pytest.MonkeyPatch
) -> None:
    executor = make_executor(1)
    real_read = ChildProcess.read
    seen: list[Any] = []

    def interrupted(self: ChildProcess, *args: Any, **kwargs: Any) -> bool:
        if threading.current_thread() is threading.main_thread():
            monkeypatch.setattr(ChildProcess, "read", real_read)
            raise KeyboardInterrupt
        return real_read(self, *args, **kwargs)

    async def main() -> None:
        await take_lease(executor)
        seen.append(await executor.run(helpers.async_pid))
        monkeypatch.setattr(ChildProcess, "read", interrupted)
        seen.append(executor.submit(helpers.async_double, 2))
        await asyncio.sleep(TIMEOUT)  # the answer arrives; reading it is interrupted

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    first_pid, future = seen
    # The pipe may have been cut mid-frame, so that child was stopped; its task still ends
    # (with the answer left in the pipe, or with BrokenWorkerError), and a new child takes
    # over.
    try:
        assert future.result(TIMEOUT) == 4
    except BrokenWorkerError:
        pass
    assert executor.submit(helpers.async_pid).result(TIMEOUT) != first_pid


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_uvloop_loop_takes_the_lease_and_gives_it_back(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    uvloop = pytest.importorskip("uvloop")
    executor = make_executor(2)

    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + TIMEOUT
        # uvloop refuses coroutine functions in run_in_executor: ex.run is the way in.
        assert await executor.run(helpers.async_double, 1) == 2
        while not holds_lease(executor, loop) and time.monotonic() < deadline:
            assert await executor.run(helpers.async_double, 1) == 2
        assert holds_lease(executor, loop)
        results: list[object] = [await executor.run(helpers.async_double, i) for i in range(20)]
        # A blocking wait in the loop's thread ends the lease; the manager thread answers.
        results.append(executor.submit(helpers.async_sleep, 0.05, "blocking").result(TIMEOUT))
        return results

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(main()) == [2 * i for i in range(20)] + ["blocking"]
    finally:
        loop.close()
    assert executor.submit(helpers.double, 4).result(TIMEOUT) == 8
