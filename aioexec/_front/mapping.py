"""``map`` and ``amap``: results in input order with bounded read-ahead.

Neighbours: ``_front.executor`` builds these iterators around its own submissions (always the
executor's own API route: a worker); a chunk of inputs is one call of the worker runtime's
``_worker.chunks.run_chunk``/``run_chunk_async``, which the front only names.

Both keep at most ``buffersize`` tasks submitted and unconsumed (every one of them when
``map`` is called without it, as ``Executor.map`` does), so a map over an endless generator
holds a bounded number of futures. Leaving early (an exception, ``break``, closing or
dropping the iterator) cancels the tasks still outstanding. When every input has a length,
``len()`` of either iterator is the number of results still to come (progress bars such as
tqdm read it as their total); else ``len()`` raises ``TypeError``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures._base import FINISHED
from typing import Any, Protocol, TypeVar

from .._worker.chunks import run_chunk, run_chunk_async
from .completion import for_asyncio
from .routing import is_coroutine_callable

__all__ = ["AsyncMapIterator", "check_map_arguments", "map_inputs", "map_results"]

T = TypeVar("T")


class Submitter(Protocol):
    """The executor, as these iterators use it (``ExecutorFront._submit_direct``)."""

    def _submit_direct(self, fn: Callable[..., Any], *args: Any) -> Future[Any]: ...


def check_map_arguments(chunksize: int, buffersize: int | None) -> None:
    if chunksize < 1:
        raise ValueError("chunksize must be >= 1.")
    if buffersize is not None:
        if not isinstance(buffersize, int):
            raise TypeError("buffersize must be an integer or None")
        if buffersize < 1:
            raise ValueError("buffersize must be None or > 0")


def input_count(iterables: tuple[Iterable[Any], ...]) -> int | None:
    """How many calls ``zip(*iterables)`` makes, if every input has a length."""
    if not iterables:
        return 0
    try:
        return min(len(it) for it in iterables)  # type: ignore[arg-type]
    except TypeError:
        return None


class _Countdown:
    """``len()`` of a result iterator: the results still to come, when known."""

    _remaining: int | None

    def __len__(self) -> int:
        if self._remaining is None:
            raise TypeError("the inputs of this map have no length")
        return self._remaining


class MapIterator(_Countdown, Iterator[T]):
    """``executor.map(...)``'s iterator: the results, and how many are left (``len()``)."""

    def __init__(self, results: Iterator[T], count: int | None) -> None:
        self._results = results
        self._remaining = count

    def __next__(self) -> T:
        value = next(self._results)
        if self._remaining:
            self._remaining -= 1
        return value

    def close(self) -> None:
        """Stop early: cancel the tasks still outstanding."""
        self._results.close()  # type: ignore[attr-defined]


def map_inputs(
    fn: Callable[..., Any], iterables: tuple[Iterable[Any], ...], chunksize: int
) -> tuple[Iterator[tuple[Any, ...]], Callable[[tuple[Any, ...]], tuple[Any, ...]]]:
    """The inputs (single calls or chunks), and how one input becomes a call: the callable
    and its arguments."""
    inputs: Iterator[tuple[Any, ...]] = zip(*iterables)  # noqa: B905 - map() semantics
    if chunksize == 1:
        return inputs, (lambda args: (fn, *args))
    runner = run_chunk_async if is_coroutine_callable(fn) else run_chunk
    chunks = iter(lambda: tuple(itertools.islice(inputs, chunksize)), ())
    return chunks, (lambda chunk: (runner, fn, chunk))


def map_results(
    executor: Submitter,
    call_for: Callable[[tuple[Any, ...]], tuple[Any, ...]],
    inputs: Iterator[tuple[Any, ...]],
    *,
    timeout: float | None,
    chunked: bool,
    buffersize: int | None,
    count: int | None,
) -> MapIterator[Any]:
    """Submit now (all inputs, or the first ``buffersize``); return the result iterator."""
    end_time = None if timeout is None else timeout + time.monotonic()
    ahead = inputs if buffersize is None else itertools.islice(inputs, buffersize)
    fs = deque(executor._submit_direct(*call_for(args)) for args in ahead)
    # Only a weak reference: an abandoned iterator must not keep the executor alive. Once
    # the executor is gone, the iterator yields what was submitted and submits no more.
    executor_ref = weakref.ref(executor)
    del executor

    def result_iterator() -> Iterator[Any]:
        try:
            while fs:
                if buffersize is not None and (executor := executor_ref()) is not None:
                    args = next(inputs, None)
                    if args is not None:
                        fs.append(executor._submit_direct(*call_for(args)))
                    del executor
                remaining = None if end_time is None else end_time - time.monotonic()
                # Yield without keeping a reference in this frame (CPython bpo-14406): the
                # consumer may rely on a result being freed once it drops it.
                if not chunked:
                    yield _result_or_cancel(fs.popleft(), remaining)
                    continue
                chunk = _result_or_cancel(fs.popleft(), remaining)
                chunk.reverse()
                while chunk:
                    yield chunk.pop()
        finally:
            _cancel_newest_first(fs)

    return MapIterator(result_iterator(), count)


def _cancel_newest_first(fs: deque[Future[Any]]) -> None:
    # Newest first: cancelling a running task frees a slot in its child, and dispatch is
    # first-in first-out, so the queued tasks behind it must already be cancelled by then.
    for future in reversed(fs):
        future.cancel()


def _result_or_cancel(future: Future[Any], timeout: float | None) -> Any:
    try:
        return future.result(timeout)
    finally:
        future.cancel()  # a no-op unless result() raised (timeout, or our caller went away)
        del future  # break the reference cycle through future._exception


class AsyncMapIterator(_Countdown, AsyncIterator[T]):
    """``async for r in executor.amap(...)``: results in input order.

    Not an async generator on purpose: dropping it (``break`` out of ``async for``) cancels
    the outstanding tasks at once through ``__del__``, instead of whenever asyncio gets round
    to finalizing an abandoned async generator.
    """

    def __init__(
        self,
        executor: Submitter,
        call_for: Callable[[tuple[Any, ...]], tuple[Any, ...]],
        inputs: Iterator[tuple[Any, ...]],
        *,
        chunked: bool,
        buffersize: int,
        count: int | None,
    ) -> None:
        self._remaining = count
        self._executor = executor  # strong: the iterator keeps its executor alive
        self._call_for = call_for
        self._inputs = inputs
        self._chunked = chunked
        self._ready: deque[Any] = deque()  # results of a chunk not yet handed out
        self._fs: deque[Future[Any]] = deque(
            self._submit(args) for args in itertools.islice(inputs, buffersize)
        )

    def _submit(self, args: tuple[Any, ...]) -> Future[Any]:
        return self._executor._submit_direct(*self._call_for(args))

    def __aiter__(self) -> AsyncMapIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self._ready:
            if self._remaining:
                self._remaining -= 1
            return self._ready.popleft()  # type: ignore[no-any-return]
        if not self._fs:
            raise StopAsyncIteration
        args = next(self._inputs, None)
        if args is not None:
            self._fs.append(self._submit(args))
        future = self._fs.popleft()
        try:
            # Read ahead and already answered: no bridge needed, and none could carry a
            # StopIteration out of a finished future (asyncio's would never wake us).
            # future.done() is not asked: on a task future, it counts as a wait, which ends
            # an event loop's lease on the answers (see _local.lease).
            if future._state == FINISHED:
                error = future.exception()
                if error is not None:
                    raise for_asyncio(error)
                result = future.result()
            else:
                result = await asyncio.wrap_future(future)
        except BaseException:
            self._cancel_outstanding()
            raise
        if not self._chunked:
            if self._remaining:
                self._remaining -= 1
            return result  # type: ignore[no-any-return]
        self._ready.extend(result)
        return await self.__anext__()

    async def aclose(self) -> None:
        """Cancel the tasks not consumed yet."""
        self._cancel_outstanding()

    def _cancel_outstanding(self) -> None:
        fs: deque[Future[Any]] = getattr(self, "_fs", deque())  # absent if __init__ failed
        self._fs = deque()
        self._inputs = iter(())
        self._remaining = 0
        _cancel_newest_first(fs)

    def __del__(self) -> None:
        self._cancel_outstanding()
