"""``map``: results in input order, ``timeout``, ``chunksize`` for coroutine and plain
functions, and ``buffersize`` bounding how far an endless input is read ahead."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import time

import helpers
import pytest

from aioexec import AsyncProcessExecutor

FUNCTIONS = [helpers.async_double, helpers.double]
FUNCTION_IDS = ["coroutine", "plain"]


@pytest.mark.parametrize("fn", FUNCTIONS, ids=FUNCTION_IDS)
def test_map_yields_results_in_input_order(shared_executor: AsyncProcessExecutor, fn) -> None:
    assert list(shared_executor.map(fn, range(200), timeout=30)) == [2 * i for i in range(200)]


def test_map_keeps_input_order_when_later_inputs_finish_first(
    shared_executor: AsyncProcessExecutor,
) -> None:
    delays = [0.6, 0.4, 0.2, 0.0, 0.3, 0.0]
    results = shared_executor.map(helpers.async_sleep, delays, range(len(delays)), timeout=30)
    assert list(results) == list(range(len(delays)))


def test_map_over_several_iterables_stops_at_the_shortest(
    shared_executor: AsyncProcessExecutor,
) -> None:
    results = shared_executor.map(helpers.async_sleep, [0, 0, 0], ["a", "b", "c", "d"])
    assert list(results) == ["a", "b", "c"]


def test_map_raises_timeout_error_when_a_result_is_late(
    shared_executor: AsyncProcessExecutor,
) -> None:
    started = time.monotonic()
    results = shared_executor.map(helpers.async_sleep, [0, 60], ["on time", "late"], timeout=1.0)
    assert next(results) == "on time"
    # concurrent.futures.TimeoutError: the builtin TimeoutError since Python 3.11.
    with pytest.raises(concurrent.futures.TimeoutError):
        next(results)
    assert time.monotonic() - started < 30  # the timeout fired, not the 60 s task
    # The late coroutine was cancelled: the executor is free for more work.
    assert shared_executor.submit(helpers.async_double, 4).result(30) == 8


@pytest.mark.parametrize("fn", FUNCTIONS, ids=FUNCTION_IDS)
@pytest.mark.parametrize("chunksize", [2, 7, 1000])
def test_map_with_chunksize_yields_every_result_in_order(
    shared_executor: AsyncProcessExecutor, fn, chunksize: int
) -> None:
    results = shared_executor.map(fn, range(101), timeout=30, chunksize=chunksize)
    assert list(results) == [2 * i for i in range(101)]


def test_map_with_chunksize_runs_coroutines_of_a_chunk_concurrently(
    shared_executor: AsyncProcessExecutor,
) -> None:
    started = time.monotonic()
    # 40 sleeps of 0.5 s in one chunk: about 0.5 s if they overlap, 20 s if not.
    results = shared_executor.map(helpers.async_sleep, [0.5] * 40, range(40), chunksize=40)
    assert list(results) == list(range(40))
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("fn", FUNCTIONS, ids=FUNCTION_IDS)
def test_map_with_buffersize_reads_an_endless_input_only_a_little_ahead(
    shared_executor: AsyncProcessExecutor, fn
) -> None:
    inputs = itertools.count()  # without buffersize, map would never return
    results = shared_executor.map(fn, inputs, timeout=30, buffersize=8)
    assert list(itertools.islice(results, 100)) == [2 * i for i in range(100)]
    results.close()
    # next(inputs) is how many inputs map took: the 100 consumed plus about 8 ahead.
    assert next(inputs) <= 100 + 8 + 2


def test_map_with_buffersize_and_chunksize_bounds_read_ahead_in_chunks(
    shared_executor: AsyncProcessExecutor,
) -> None:
    inputs = itertools.count()
    results = shared_executor.map(
        helpers.async_double, inputs, timeout=30, chunksize=5, buffersize=4
    )
    assert list(itertools.islice(results, 100)) == [2 * i for i in range(100)]
    results.close()
    assert next(inputs) <= 100 + (4 + 2) * 5


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"chunksize": 0}, ValueError),
        ({"buffersize": 0}, ValueError),
        ({"buffersize": 2.5}, TypeError),
    ],
)
def test_map_rejects_invalid_chunksize_and_buffersize(
    shared_executor: AsyncProcessExecutor, kwargs: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        shared_executor.map(helpers.double, range(3), **kwargs)


@pytest.mark.parametrize("fn", FUNCTIONS, ids=FUNCTION_IDS)
def test_amap_yields_in_input_order_and_reads_an_endless_input_only_a_little_ahead(
    shared_executor: AsyncProcessExecutor, fn
) -> None:
    inputs = itertools.count()

    async def first_100() -> list[int]:
        got: list[int] = []
        results = shared_executor.amap(fn, inputs, buffersize=8)
        async for value in results:
            got.append(value)
            if len(got) == 100:
                break
        await results.aclose()  # type: ignore[attr-defined]
        return got

    assert asyncio.run(asyncio.wait_for(first_100(), 30)) == [2 * i for i in range(100)]
    assert next(inputs) <= 100 + 8 + 2


def test_map_with_chunksize_raises_a_call_s_exception_after_the_earlier_chunks(
    shared_executor: AsyncProcessExecutor,
) -> None:
    inputs = [1, 2, 3, -4, 5, 6]
    results = shared_executor.map(helpers.async_double_or_fail, inputs, chunksize=2, timeout=30)
    # As in ProcessPoolExecutor, a failure fails its whole chunk ([3, -4]).
    assert [next(results) for _ in range(2)] == [2, 4]
    with pytest.raises(ValueError, match="negative input -4"):
        next(results)


def test_each_coroutine_of_a_chunk_runs_in_its_own_task(
    shared_executor: AsyncProcessExecutor,
) -> None:
    # On 3.12+ the items of a chunk start eagerly; each still runs as its own task.
    ids = list(shared_executor.map(helpers.async_current_task_id, range(8), chunksize=8))
    assert len(set(ids)) == 8
