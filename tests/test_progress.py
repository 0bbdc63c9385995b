"""Progress: ``len()`` of map/amap results, tqdm over them, and ``ex.as_completed``."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import Callable
from concurrent.futures import Future

import helpers
import pytest

from aioexec import AsyncProcessExecutor

TIMEOUT = 30


def test_map_results_know_how_many_are_left_when_the_inputs_have_a_length(
    shared_executor: AsyncProcessExecutor,
) -> None:
    results = shared_executor.map(pow, range(10), [2] * 7, chunksize=3)
    assert len(results) == 7  # zip() stops at the shortest input
    next(results)
    assert len(results) == 6
    assert list(results) == [i * i for i in range(1, 7)]
    assert len(results) == 0


def test_map_results_over_an_unsized_input_have_no_length(
    shared_executor: AsyncProcessExecutor,
) -> None:
    results = shared_executor.map(helpers.double, itertools.count(), buffersize=4)
    with pytest.raises(TypeError, match="no length"):
        len(results)
    assert next(results) == 0
    results.close()


def test_amap_results_know_how_many_are_left(shared_executor: AsyncProcessExecutor) -> None:
    async def main() -> tuple[int, list[int], int]:
        results = shared_executor.amap(helpers.async_double, range(5), chunksize=2)
        total = len(results)
        values = [r async for r in results]
        return total, values, len(results)

    assert asyncio.run(asyncio.wait_for(main(), TIMEOUT)) == (5, [0, 2, 4, 6, 8], 0)


def test_tqdm_over_amap_shows_progress_with_the_known_total(
    shared_executor: AsyncProcessExecutor,
) -> None:
    tqdm_asyncio = pytest.importorskip("tqdm.asyncio")
    out = io.StringIO()

    async def main() -> list[int]:
        bar = tqdm_asyncio.tqdm(shared_executor.amap(helpers.async_double, range(12)), file=out)
        assert bar.total == 12
        return [r async for r in bar]

    assert asyncio.run(asyncio.wait_for(main(), TIMEOUT)) == [2 * i for i in range(12)]
    assert "12/12" in out.getvalue()


def test_tqdm_over_map_shows_progress_with_the_known_total(
    shared_executor: AsyncProcessExecutor,
) -> None:
    tqdm = pytest.importorskip("tqdm")
    out = io.StringIO()
    bar = tqdm.tqdm(shared_executor.map(helpers.double, range(9)), file=out)
    assert bar.total == 9
    assert list(bar) == [2 * i for i in range(9)]
    assert "9/9" in out.getvalue()


def test_as_completed_yields_the_given_futures_in_the_order_they_finish(
    shared_executor: AsyncProcessExecutor,
) -> None:
    async def main() -> tuple[list[object], int]:
        slow = shared_executor.submit(helpers.async_sleep, 0.6, "slow")
        fast = shared_executor.submit(helpers.async_sleep, 0.05, "fast")
        failing = shared_executor.submit(helpers.async_raise_value_error, "boom")
        given = {slow: "slow", fast: "fast", failing: "failing"}
        order = []
        completed = shared_executor.as_completed(given)
        total = len(completed)
        async for future in completed:
            assert future in given  # the very future, so the dict finds its input
            order.append(given[future])
        return order, total

    order, total = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert total == 3
    assert order[-1] == "slow"
    assert set(order[:2]) == {"fast", "failing"}


def test_as_completed_takes_awaitables_and_yields_their_tasks(
    shared_executor: AsyncProcessExecutor,
) -> None:
    async def main() -> list[int]:
        runs = [shared_executor.run(helpers.async_sleep, d, d) for d in (0.3, 0.0, 0.15)]
        return [task.result() async for task in shared_executor.as_completed(runs)]

    assert asyncio.run(asyncio.wait_for(main(), TIMEOUT)) == [0.0, 0.15, 0.3]


def test_as_completed_raises_timeout_error_and_cancels_nothing(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    executor = make_executor(1)

    async def main() -> Future[object]:
        long = executor.submit(helpers.async_sleep, 1.0, "done")
        with pytest.raises(TimeoutError, match=r"1 \(of 1\) futures unfinished"):
            async for _ in executor.as_completed([long], timeout=0.1):
                pass
        return long

    long = asyncio.run(main())
    assert long.result(TIMEOUT) == "done"
