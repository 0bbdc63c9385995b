"""The executor's own threads: where calls that stay in this process run.

Neighbours: ``_front.executor`` sends here what the routing rule (``_front.routing``) keeps
in this process: plain callables reached as asyncio's default executor, asyncio's own calls,
and (with ``fallback="thread"``) calls that cannot be pickled for a worker.

They run on a ``ThreadPoolExecutor`` made as asyncio makes its default executor: the same
default size (``min(32, cpus + 4)``) and the same thread names (``asyncio_0``, ...), so that
a call behaves here exactly as it would on asyncio's own default executor. It is made on the
first such call and shut down with the executor.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["LocalThreads"]


class LocalThreads:
    """A lazily made ``ThreadPoolExecutor`` named as asyncio's default one.

    ``_pool`` is written once (None -> the pool) under ``_lock``; ``submit`` reads it without
    the lock first, and a reader that sees None takes the lock and looks again."""

    def __init__(self, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None) -> None:
        self._loop_factory = loop_factory  # for coroutine functions that stay here
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        self.calls = 0  # calls submitted so far (for stats; a lost update under races is fine)

    def submit(
        self, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any], is_async: bool
    ) -> Future[Any]:
        pool = self._pool or self._open()
        self.calls += 1
        if is_async:
            return pool.submit(run_coroutine_function, fn, args, kwargs, self._loop_factory)
        return pool.submit(fn, *args, **kwargs)

    def _open(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                if self._closed:
                    raise RuntimeError("cannot schedule new futures after shutdown")
                self._pool = ThreadPoolExecutor(thread_name_prefix="asyncio")
            return self._pool

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        with self._lock:
            self._closed = True
            pool = self._pool
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def run_coroutine_function(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
) -> Any:
    """Run a coroutine function that stays in this process, in an event loop of its own."""
    loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(fn(*args, **kwargs))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
