"""How one chunk of ``map(fn, ..., chunksize=n)`` runs in a worker.

Neighbours: the engines pickle a chunk as a call of :func:`run_chunk` (plain functions) or
:func:`run_chunk_async` (coroutine functions) with ``(fn, chunk)``; a worker imports this
module by reference when it unpickles such a call, and runs it like any other
(``_worker.runtime``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from .runtime import new_task

__all__ = ["run_chunk", "run_chunk_async"]


def run_chunk(fn: Callable[..., Any], chunk: Iterable[tuple[Any, ...]]) -> list[Any]:
    """Run one chunk of plain calls, in order."""
    return [fn(*args) for args in chunk]


async def run_chunk_async(
    fn: Callable[..., Coroutine[Any, Any, Any]], chunk: Iterable[tuple[Any, ...]]
) -> list[Any]:
    """Run one chunk of coroutine calls concurrently; results in input order.

    The first failure (or a cancellation of the chunk) cancels the calls still running, and
    every call is awaited before this returns, so none outlives its chunk.
    """
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Future[Any]] = []
    try:
        for args in chunk:
            tasks.append(new_task(loop, fn(*args)))
        return [await t for t in tasks]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
