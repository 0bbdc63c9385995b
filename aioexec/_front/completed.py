"""``ex.as_completed(fs)``: an async iterator over futures, in the order they finish.

Neighbours: ``_front.executor`` makes one per call; it works with the futures of ``submit``
(``concurrent.futures.Future``), asyncio futures and tasks, and awaitables such as
``ex.run(...)`` coroutines, which it turns into tasks of the running loop.

It yields the very futures it was given (a coroutine's task in its place), so a dict from
future to input still finds each one, and an error surfaces only when the caller asks a
future for its result. ``len()`` is the number of futures not yielded yet, so a progress bar
(``tqdm.asyncio.tqdm``) knows its total. Nothing polls: each future reports its completion
into a queue through a done-callback, bridged into the loop for concurrent futures. Leaving
the loop early cancels nothing, as ``asyncio.as_completed`` and ``concurrent.futures``'s.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

__all__ = ["AsCompleted"]

F = TypeVar("F")


class AsCompleted(AsyncIterator[F], Generic[F]):
    """``async for future in ex.as_completed(fs)``: each future once it is done."""

    def __init__(self, fs: Iterable[Any], timeout: float | None) -> None:
        self._given = list(dict.fromkeys(fs))  # each once, in order
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._timeout = timeout
        self._done: asyncio.Queue[Any] | None = None  # made in the loop that iterates
        self._remaining = len(self._given)

    def __len__(self) -> int:
        return self._remaining

    def __aiter__(self) -> AsCompleted[F]:
        return self

    async def __anext__(self) -> F:
        if self._remaining == 0:
            raise StopAsyncIteration
        if self._done is None:
            self._start()
        assert self._done is not None
        remaining = None if self._deadline is None else self._deadline - time.monotonic()
        try:
            future = await asyncio.wait_for(self._done.get(), remaining)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"{self._remaining} (of {len(self._given)}) futures unfinished after "
                f"{self._timeout} s"
            ) from None
        self._remaining -= 1
        return future  # type: ignore[no-any-return]

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Queue[Any] = asyncio.Queue()
        self._done = done
        for i, item in enumerate(self._given):
            if isinstance(item, Future):
                # Bridged into this loop; the queue receives the concurrent future itself.
                bridge = asyncio.wrap_future(item, loop=loop)
                bridge.add_done_callback(functools.partial(_report, done, item))
                continue
            if not asyncio.isfuture(item):
                item = self._given[i] = asyncio.ensure_future(item, loop=loop)
            item.add_done_callback(done.put_nowait)


def _report(done: asyncio.Queue[Any], given: Future[Any], bridge: asyncio.Future[Any]) -> None:
    if not bridge.cancelled():
        bridge.exception()  # the caller reads it from ``given``; the bridge must not warn
    done.put_nowait(given)
