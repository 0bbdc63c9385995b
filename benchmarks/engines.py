"""Engine adapters: one small async interface over aioexec and its peers.

Every workload drives an engine only through :class:`Engine`, from inside an asyncio loop:

- ``call(fn, *args)``: one task, awaited. aioexec, ProcessPoolExecutor and loky go through
  ``loop.run_in_executor``; aiomultiprocess through its own ``Pool.apply``.
- ``bulk_map(fn, items, chunksize)``: the engine's own bulk API (``Executor.map`` driven from
  a helper thread, or ``aiomultiprocess.Pool.map``).
- ``amap``/``buffered_map_count``/``submit_cancellable``: what only some engines offer; the
  others raise :class:`NotSupported`, which the report shows as ``n/a`` with the reason.

An engine that cannot be imported raises :class:`NotSupported` from :func:`make_engine`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import inspect
import multiprocessing
import time
from collections.abc import Callable, Iterable
from typing import Any

from benchmarks import tasks

ENGINES = ("aioexec", "ProcessPoolExecutor", "loky", "aiomultiprocess")
SHORT = {
    "aioexec": "aioexec",
    "ProcessPoolExecutor": "PPE",
    "loky": "loky",
    "aiomultiprocess": "aiomp",
}


class NotSupported(Exception):
    """The engine lacks this feature (or is not installed): reported as n/a with the reason."""


class Engine:
    """Base adapter; subclasses fill in ``start``/``call``/``bulk_map``/``close``."""

    name = "?"
    runs_coroutines = False  # True: gets the ``*_async`` task variants

    def __init__(self, workers: int, start_method: str, slots: int, use_uvloop: bool) -> None:
        self.workers = workers
        self.start_method = start_method
        self.child_concurrency = slots
        self.use_uvloop = use_uvloop
        self.pids: set[int] = set()  # the workers that answered warm()

    @property
    def slots(self) -> int:
        """Tasks that one worker runs at once."""
        return self.child_concurrency if self.runs_coroutines else 1

    def fn(self, base: str) -> Callable[..., Any]:
        """The task function ``tasks.<base>`` or its coroutine twin, as this engine needs."""
        name = f"{base}_async" if self.runs_coroutines else base
        fn: Callable[..., Any] = getattr(tasks, name)
        return fn

    def describe(self) -> dict[str, Any]:
        """Settings recorded in the JSON next to the results."""
        return {"workers": self.workers, "start_method": self.start_method, "slots": self.slots}

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def restart(self) -> None:
        """Replace a broken pool by a new one (what a user of a breakable pool must do)."""
        await self.close()
        await self.start()

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    async def bulk_map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: int
    ) -> list[Any]:
        raise NotImplementedError

    async def amap(self, fn: Callable[..., Any], items: Iterable[Any], chunksize: int) -> int:
        raise NotSupported(f"{self.name} has no async map")

    async def buffered_map_count(
        self, fn: Callable[..., Any], n: int, buffersize: int, chunksize: int = 1
    ) -> int:
        raise NotSupported(f"{self.name} has no map(buffersize=...) on this Python")

    def submit_cancellable(self, fn: Callable[..., Any], *args: Any) -> Callable[[], bool]:
        """Start a task; return its ``cancel`` (whose result says whether it was accepted)."""
        raise NotSupported(f"{self.name} cannot cancel a running task")

    def breaks_on_worker_death(self) -> bool:
        """Whether one dead worker breaks the whole pool (then :meth:`restart` is needed)."""
        return False

    async def warm(self, hold_s: float = 0.0, deadline_s: float = 120.0) -> set[int]:
        """Run batches of tasks until every worker has started and answered (or the deadline
        passed); return the workers' pids, also kept in ``self.pids``.

        ``hold_s``: each task holds its worker that long first, so that the workers that
        started first cannot take a whole batch while a large pool's last ones start."""
        pids: set[int] = set()
        fn, args = (self.fn("getpid_after"), (hold_s,)) if hold_s else (self.fn("getpid"), ())
        end = time.monotonic() + deadline_s
        while True:
            batch = [self.call(fn, *args) for _ in range(self.workers * max(2, self.slots))]
            pids.update(await asyncio.gather(*batch))
            if len(pids) >= self.workers or time.monotonic() > end:
                break
            await asyncio.sleep(0.05)
        self.pids = pids
        return pids


class _ExecutorEngine(Engine):
    """Shared code for engines that are ``concurrent.futures.Executor`` subclasses."""

    ex: Any = None

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.ex, fn, *args)

    async def bulk_map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: int
    ) -> list[Any]:
        ex = self.ex

        def consume() -> list[Any]:
            return list(ex.map(fn, items, chunksize=chunksize))

        return await asyncio.to_thread(consume)

    async def close(self) -> None:
        if self.ex is not None:
            ex, self.ex = self.ex, None
            await asyncio.to_thread(ex.shutdown, True)

    async def restart(self) -> None:
        """Drop a broken pool without waiting for it, and start a new one."""
        if self.ex is not None:
            ex, self.ex = self.ex, None
            ex.shutdown(wait=False)
        await self.start()


class AioexecEngine(_ExecutorEngine):
    """``aioexec.AsyncProcessExecutor`` through run_in_executor, map, amap and submit."""

    name = "aioexec"
    runs_coroutines = True

    async def start(self) -> None:
        try:
            mod = importlib.import_module("aioexec")
            cls = mod.AsyncProcessExecutor
        except (ImportError, AttributeError) as exc:
            raise NotSupported(f"aioexec.AsyncProcessExecutor unavailable ({exc})") from None
        kwargs: dict[str, Any] = {"child_concurrency": self.child_concurrency}
        if self.use_uvloop:
            import uvloop

            kwargs["loop_factory"] = uvloop.new_event_loop
        ctx = multiprocessing.get_context(self.start_method)
        self.ex = cls(self.workers, ctx, **kwargs)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "call_path": self._call_path()}

    def _call_path(self) -> str:
        # uvloop's run_in_executor rejects coroutine functions outright (asyncio's only in
        # debug mode), so under --uvloop the asyncio-native ``ex.run`` is the way in.
        return "ex.run" if self.use_uvloop else "loop.run_in_executor"

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.use_uvloop:
            return await self.ex.run(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.ex, fn, *args)

    async def amap(self, fn: Callable[..., Any], items: Iterable[Any], chunksize: int) -> int:
        """Consume ``ex.amap`` (its default buffersize; the chunksize of ``map`` if it has one)."""
        amap = self.ex.amap
        has_chunks = "chunksize" in inspect.signature(amap).parameters
        kwargs = {"chunksize": chunksize} if has_chunks else {}
        count = 0
        async for _ in amap(fn, items, **kwargs):
            count += 1
        return count

    async def buffered_map_count(
        self, fn: Callable[..., Any], n: int, buffersize: int, chunksize: int = 1
    ) -> int:
        ex = self.ex

        def consume() -> int:
            return sum(1 for _ in ex.map(fn, range(n), buffersize=buffersize, chunksize=chunksize))

        return await asyncio.to_thread(consume)

    def submit_cancellable(self, fn: Callable[..., Any], *args: Any) -> Callable[[], bool]:
        fut: concurrent.futures.Future[Any] = self.ex.submit(fn, *args)
        return fut.cancel


class ProcessPoolEngine(_ExecutorEngine):
    """The standard library's ``concurrent.futures.ProcessPoolExecutor``."""

    name = "ProcessPoolExecutor"

    async def start(self) -> None:
        ctx = multiprocessing.get_context(self.start_method)
        self.ex = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=ctx)

    async def buffered_map_count(
        self, fn: Callable[..., Any], n: int, buffersize: int, chunksize: int = 1
    ) -> int:
        ex = self.ex
        if "buffersize" not in inspect.signature(ex.map).parameters:
            raise NotSupported("ProcessPoolExecutor.map has no buffersize before Python 3.14")

        def consume() -> int:
            return sum(1 for _ in ex.map(fn, range(n), buffersize=buffersize, chunksize=chunksize))

        return await asyncio.to_thread(consume)

    def submit_cancellable(self, fn: Callable[..., Any], *args: Any) -> Callable[[], bool]:
        fut: concurrent.futures.Future[Any] = self.ex.submit(fn, *args)
        return fut.cancel  # returns False for a running call

    def breaks_on_worker_death(self) -> bool:
        return True


class LokyEngine(_ExecutorEngine):
    """``loky.ProcessPoolExecutor``; start method "spawn" maps to loky's own "loky" context."""

    name = "loky"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "loky_context": self._context_name()}

    def _context_name(self) -> str:
        return "loky" if self.start_method == "spawn" else self.start_method

    async def start(self) -> None:
        try:
            import loky
            from loky.backend import get_context
        except ImportError as exc:
            raise NotSupported(f"loky not installed ({exc})") from None
        self.ex = loky.ProcessPoolExecutor(self.workers, context=get_context(self._context_name()))

    def submit_cancellable(self, fn: Callable[..., Any], *args: Any) -> Callable[[], bool]:
        fut: concurrent.futures.Future[Any] = self.ex.submit(fn, *args)
        return fut.cancel

    def breaks_on_worker_death(self) -> bool:
        return True


class AiomultiprocessEngine(Engine):
    """``aiomultiprocess.Pool`` through its own ``apply`` and ``map``."""

    name = "aiomultiprocess"
    runs_coroutines = True
    pool: Any = None

    async def start(self) -> None:
        try:
            import aiomultiprocess
        except ImportError as exc:
            raise NotSupported(f"aiomultiprocess not installed ({exc})") from None
        aiomultiprocess.set_start_method(self.start_method)
        kwargs: dict[str, Any] = {}
        if self.use_uvloop:
            import uvloop

            kwargs["loop_initializer"] = uvloop.new_event_loop
        self.pool = aiomultiprocess.Pool(
            processes=self.workers, childconcurrency=self.child_concurrency, **kwargs
        )

    async def close(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            pool.terminate()
            await pool.join()

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.pool.apply(fn, args)

    async def bulk_map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: int
    ) -> list[Any]:
        return list(await self.pool.map(fn, items))  # no chunksize in aiomultiprocess

    def submit_cancellable(self, fn: Callable[..., Any], *args: Any) -> Callable[[], bool]:
        task: asyncio.Future[Any] = asyncio.ensure_future(self.pool.apply(fn, args))
        return task.cancel  # cancels the local waiter only; the child's coroutine runs on


_CLASSES: dict[str, type[Engine]] = {
    "aioexec": AioexecEngine,
    "ProcessPoolExecutor": ProcessPoolEngine,
    "loky": LokyEngine,
    "aiomultiprocess": AiomultiprocessEngine,
}


def make_engine(name: str, workers: int, start_method: str, slots: int, use_uvloop: bool) -> Engine:
    """Build the adapter for ``name`` (one of :data:`ENGINES`); the pool is not started yet."""
    return _CLASSES[name](workers, start_method, slots, use_uvloop)
