"""Progress bars with tqdm over ``ex.map``, ``ex.amap`` and results in completion order.

Run it with ``python examples/progress.py`` (needs ``pip install -e '.[examples]'``; a few
seconds; the bars go to stderr, the results to stdout).

What it shows:

* ``tqdm(ex.map(fn, items, chunksize=...), total=len(items))``: ``ex.map`` returns a plain
  iterator, so tqdm cannot see how many results will come; pass ``total`` to get a
  percentage and an estimate of the time left (without it tqdm shows a bare count);
* ``async for r in tqdm(ex.amap(fn, items), total=len(items))`` with ``tqdm.asyncio.tqdm``
  (``tqdm.auto.tqdm`` is the same class outside notebooks): that class wraps an async
  iterator too; the plain ``tqdm.tqdm`` does not (``async for`` over it raises
  ``TypeError``). Again ``total`` must be given;
* results in completion order, today: ``tqdm.asyncio.tqdm.as_completed`` over
  ``ex.run(...)`` awaitables (it wraps ``asyncio.as_completed``), or, from synchronous code,
  ``concurrent.futures.as_completed`` over ``ex.submit(...)`` futures inside a plain tqdm.

All of them use the executor's own API, which always sends the function to a child.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

from tqdm import tqdm
from tqdm.asyncio import tqdm as async_tqdm

from aioexec import AsyncProcessExecutor

ITEMS = list(range(120))


def work(n: int) -> int:
    """A plain CPU-bound function, about 5 ms each."""
    acc = n
    for i in range(80_000):
        acc = (acc * 31 + i) % 1_000_003
    return acc


async def slow_square(n: int) -> int:
    """A coroutine whose run time varies by input, so completion order differs from input."""
    await asyncio.sleep(0.05 * (n % 7))
    return n * n


def check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"progress: {what}")


def with_map(ex: AsyncProcessExecutor) -> list[int]:
    results = list(tqdm(ex.map(work, ITEMS, chunksize=4), total=len(ITEMS), desc="ex.map"))
    print(f"ex.map:  {len(results)} results in input order, sum {sum(results)}")
    return results


def with_submit_as_completed(ex: AsyncProcessExecutor, expected: list[int]) -> None:
    futures = {ex.submit(work, n): n for n in ITEMS}
    done = concurrent.futures.as_completed(futures)
    results = {futures[f]: f.result() for f in tqdm(done, total=len(futures), desc="as_completed")}
    check([results[n] for n in ITEMS] == expected, "as_completed gave other results than map")
    print(f"ex.submit + concurrent.futures.as_completed: {len(results)} results, as ex.map's")


async def with_amap(ex: AsyncProcessExecutor, expected: list[int]) -> None:
    results = []
    bar = async_tqdm(ex.amap(work, ITEMS, chunksize=4), total=len(ITEMS), desc="ex.amap")
    async for result in bar:
        results.append(result)
    check(results == expected, "amap gave other results than map")
    print(f"ex.amap: {len(results)} results in input order, as ex.map's")


async def with_asyncio_as_completed(ex: AsyncProcessExecutor) -> None:
    awaitables = [ex.run(slow_square, n) for n in ITEMS]
    squares = []
    for next_done in async_tqdm.as_completed(awaitables, desc="ex.run + as_completed"):
        squares.append(await next_done)
    check(sorted(squares) == [n * n for n in ITEMS], "wrong squares")
    print(
        f"ex.run + asyncio.as_completed: {len(squares)} results, sum {sum(squares)}"
        f" (arrived in input order: {squares == sorted(squares)})"
    )


async def async_part(expected: list[int]) -> None:
    async with AsyncProcessExecutor(child_concurrency=32) as ex:
        await with_amap(ex, expected)
        await with_asyncio_as_completed(ex)


def main() -> None:
    start = time.perf_counter()
    with AsyncProcessExecutor() as ex:
        results = with_map(ex)
        with_submit_as_completed(ex, results)
    asyncio.run(async_part(results))
    print(f"all four took {time.perf_counter() - start:.1f} s")
    print("progress: OK")


if __name__ == "__main__":  # required: the children import this module
    main()
