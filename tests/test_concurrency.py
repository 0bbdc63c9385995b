"""Many coroutines overlap inside each child; many caller threads and event loops submit at
once and each gets its own correct results."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import helpers
import pytest

from aioexec import AsyncProcessExecutor

TIMEOUT = 30  # below pytest-timeout (60 s), so that a hang fails this test cleanly


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_200_sleeping_coroutines_on_2_children_overlap(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    ex = make_executor(2, child_concurrency=50)
    started = time.monotonic()
    fs = [ex.submit(helpers.async_sleep, 0.5, i) for i in range(200)]
    assert [f.result(TIMEOUT) for f in fs] == list(range(200))
    # 100 slots: about 1 s plus start-up; one at a time would take 100 s.
    assert time.monotonic() - started < 10


def _run_threads(targets: list[Callable[[], None]]) -> None:
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT + 15)  # the threads bound their own waits by TIMEOUT
        assert not t.is_alive(), "a submitting thread did not finish"
    if errors:
        raise errors[0]


def test_8_threads_submitting_200_tasks_each_get_their_own_results(
    shared_executor: AsyncProcessExecutor,
) -> None:
    results: dict[int, list[object]] = {}

    def submitter(n: int) -> Callable[[], None]:
        def run() -> None:
            fs: list[Future[object]] = []
            for i in range(200):
                value = n * 1000 + i
                if i % 2:
                    fs.append(shared_executor.submit(helpers.async_call_record, value, n=n))
                else:
                    fs.append(shared_executor.submit(helpers.double, value))
            results[n] = [f.result(TIMEOUT) for f in fs]

        return run

    _run_threads([submitter(n) for n in range(8)])
    for n in range(8):
        got = results[n]
        assert len(got) == 200
        for i, result in enumerate(got):
            value = n * 1000 + i
            if i % 2:
                assert isinstance(result, tuple)
                assert result[1:] == ((value,), {"n": n})
            else:
                assert result == 2 * value


def test_4_threads_with_their_own_event_loops_use_run_in_executor(
    shared_executor: AsyncProcessExecutor,
) -> None:
    results: dict[int, list[object]] = {}

    def loop_thread(n: int) -> Callable[[], None]:
        async def main() -> list[object]:
            loop = asyncio.get_running_loop()
            calls = [
                loop.run_in_executor(shared_executor, helpers.async_double, n * 1000 + i)
                for i in range(50)
            ]
            calls += [
                loop.run_in_executor(shared_executor, helpers.double, n * 1000 + i)
                for i in range(50)
            ]
            return await asyncio.wait_for(asyncio.gather(*calls), TIMEOUT)

        def run() -> None:
            results[n] = asyncio.run(main())

        return run

    _run_threads([loop_thread(n) for n in range(4)])
    for n in range(4):
        assert results[n] == [2 * (n * 1000 + i) for i in range(50)] * 2
