"""CPU per item of a chunk of coroutine calls, run as aioexec runs a ``map`` chunk and without
a Task for the items that never suspend.

``python -m benchmarks.micro.chunk_items``

In the ``map`` row the children spend 6 - 7 µs of CPU per item against 0.6 µs for
ProcessPoolExecutor's (plain functions in a list comprehension): a chunk of coroutine calls
makes one asyncio Task per item (``aioexec._worker.chunks.run_chunk_async``). This measures,
in one event loop and no other process, 100-item chunks of a coroutine that returns at once
and of one that suspends once (``await asyncio.sleep(0)``), two ways:

- ``task per item``: a Task per call, started eagerly (as aioexec's ``new_task``: Python
  3.12's ``eager_start``, else ``create_task``), then each awaited in order;
- ``direct first step``: ``coro.send(None)`` runs the call's first step here; a call that
  returns then needs nothing more; one that suspends is finished by a Task that resumes it
  where it stopped (``_Rest`` yields the future it was waiting on, as its own ``await``
  would). The first step then runs in the chunk's Task (its ``current_task`` and context),
  not in one of its own: the semantic difference to weigh.

The library is not imported: this is the core of a proposed change, measured in isolation.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any

_EAGER = sys.version_info >= (3, 12)


async def returns(x: int) -> int:
    return x


async def suspends(x: int) -> int:
    await asyncio.sleep(0)
    return x


async def task_per_item(
    fn: Callable[..., Coroutine[Any, Any, Any]], chunk: list[tuple[Any, ...]]
) -> list[Any]:
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Future[Any]] = []
    for args in chunk:
        if _EAGER:
            tasks.append(asyncio.Task(fn(*args), loop=loop, eager_start=True))  # type: ignore[call-arg,unused-ignore]
        else:
            tasks.append(loop.create_task(fn(*args)))
    return [await t for t in tasks]


class _Rest:
    """Finishes a coroutine whose first step already ran and yielded ``first``."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        pending = self.first
        while True:
            exc: BaseException | None = None
            value = None
            try:
                value = yield pending
            except BaseException as e:  # delivered by the Task: pass it on to the coroutine
                exc = e
            try:
                pending = self.coro.throw(exc) if exc is not None else self.coro.send(value)
            except StopIteration as stop:
                return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], first: Any) -> Any:
    return await _Rest(coro, first)


async def direct_first_step(
    fn: Callable[..., Coroutine[Any, Any, Any]], chunk: list[tuple[Any, ...]]
) -> list[Any]:
    loop = asyncio.get_running_loop()
    results: list[Any] = []
    pending: list[tuple[int, asyncio.Task[Any]]] = []
    for args in chunk:
        coro = fn(*args)
        try:
            first = coro.send(None)
        except StopIteration as stop:
            results.append(stop.value)
            continue
        pending.append((len(results), loop.create_task(_finish(coro, first))))
        results.append(None)
    for index, task in pending:
        results[index] = await task
    return results


async def main() -> None:
    chunk = [(i,) for i in range(100)]
    rounds = 500
    for fn in (returns, suspends):
        for name, run in (
            ("task per item", task_per_item),
            ("direct first step", direct_first_step),
        ):
            for _ in range(50):
                if await run(fn, chunk) != list(range(100)):
                    raise RuntimeError(f"{name} returned the wrong results")
            c0 = time.process_time()
            for _ in range(rounds):
                await run(fn, chunk)
            per_item = (time.process_time() - c0) / (rounds * len(chunk)) * 1e6
            print(f"{fn.__name__:<9} {name:<18} {per_item:5.2f} µs CPU per item")


if __name__ == "__main__":
    asyncio.run(main())
