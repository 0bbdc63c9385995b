"""``ExecutorFront``: the public API every engine shares (submit, map, run, amap, shutdown).

Neighbours: the composition roots subclass it with one engine each
(``aioexec._executor.AsyncProcessExecutor`` with ``_local.engine.LocalEngine``,
``aioexec.ray.AsyncRayExecutor`` with the Ray engine). Each call is routed here
(``_front.routing``): to the executor's own threads (``_front.local``) or, through the engine
interface (``_front.engine``), to a worker; its future is a ``_front.futures.TaskFuture``, or a
``LoopFuture`` when an event loop awaits it; ``_front.mapping`` builds ``map``/``amap``.

The class subclasses ``ThreadPoolExecutor`` because ``loop.set_default_executor`` accepts
nothing else since Python 3.11, and because, as a loop's default executor, it keeps that
class's semantics for every plain callable (the routing rule). It does not reuse that class's
machinery: ``ThreadPoolExecutor.__init__`` is not called, and the calls that stay in this
process run on a private pool named and sized as asyncio's own default executor.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

if TYPE_CHECKING:
    # Only for type checkers: importing typing_extensions costs 1.4 - 1.7 ms.
    from typing_extensions import Self

from .._errors import BrokenPoolError
from .completed import AsCompleted
from .engine import Engine, Stats, Task, TaskOptions, stops_plain_call
from .futures import LoopFuture, TaskFuture
from .local import LocalThreads
from .mapping import (
    AsyncMapIterator,
    MapIterator,
    check_map_arguments,
    input_count,
    map_inputs,
    map_results,
)
from .options import Fallback
from .routing import Route, choose_route, default_executor_call

__all__ = ["ExecutorFront"]

P = ParamSpec("P")
T = TypeVar("T")
# The operations of ProcessPoolExecutor._force_shutdown (its values in 3.14 and 3.15).
_TERMINATE = "terminate"
_KILL = "kill"
_LOGGER = logging.getLogger("aioexec")


def _failed_future(exc: BaseException) -> Future[Any]:
    # Made here, not in an except block: there, the exception's traceback would hold the
    # submitting frame, whose locals would hold this future: a cycle only the gc can free.
    failed: Future[Any] = Future()
    failed.set_exception(exc)
    return failed


def _defined_in_main(fn: object) -> bool:
    return getattr(fn, "__module__", None) == "__main__"


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ExecutorFront(ThreadPoolExecutor):
    """The API of an aioexec executor over one engine (see the module docstring)."""

    def __init__(self, engine: Engine, fallback: Fallback) -> None:
        # ThreadPoolExecutor.__init__ is deliberately not called: see the module docstring.
        self._engine = engine
        self._fallback = fallback
        self._max_workers = engine.options.max_workers
        self._closed = False  # shutdown() was called (written once; the engine re-checks)
        self._task_options: TaskOptions | None = None  # set on the views of options()
        self._local_threads = LocalThreads(engine.options.loop_factory)
        # Collected without shutdown(): the engine finishes the submitted work and stops.
        finalizer = weakref.finalize(self, engine.shutdown, False)
        finalizer.atexit = False  # the engines stop at interpreter exit on their own

    # -- submitting -------------------------------------------------------------------------

    @overload
    def submit(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Future[T]: ...

    @overload
    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]: ...

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` in a worker (awaited there if it is a coroutine
        function) and return a ``concurrent.futures.Future`` of its result.

        Cancelling the future while its coroutine runs cancels the coroutine in the worker.
        Called by asyncio's ``run_in_executor`` as a loop's default executor, a plain
        callable runs on a thread of this process instead (see ``aioexec.in_child``); and
        ``run_in_executor`` gets the asyncio future it hands back to its caller.
        """
        default_call, loop = default_executor_call(self)
        return self._submit(fn, args, kwargs, default_call, loop)  # type: ignore[return-value]

    def _submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        default_call: bool,
        loop: asyncio.AbstractEventLoop | None,
    ) -> Future[Any] | LoopFuture[Any]:
        """Route and submit; ``loop``: the event loop that awaits the task, whose future is
        then a ``LoopFuture`` of that loop (unless the call runs in this process)."""
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        route, fn, is_async = choose_route(fn, default_call)
        if _LOGGER.isEnabledFor(logging.DEBUG):
            _LOGGER.debug(
                "aioexec: %r runs on %s (%s call)",
                fn,
                route.value,
                "default-executor" if default_call else "direct",
            )
        if route is Route.THREAD:
            return self._local_threads.submit(fn, args, kwargs, is_async)
        engine = self._engine
        broken = engine.broken
        if broken is not None:
            raise BrokenPoolError(broken)
        engine.open()
        try:
            try:
                by_value = self._fallback == "cloudpickle" and _defined_in_main(fn)
                call = engine.prepare(fn, args, kwargs, by_value)
            except Exception:
                if self._fallback == "thread":
                    return self._local_threads.submit(fn, args, kwargs, is_async)
                if self._fallback != "cloudpickle":
                    raise
                call = engine.prepare(fn, args, kwargs, True)
        except Exception as exc:
            return _failed_future(exc)
        options = self._task_options
        # A running coroutine, or a stoppable plain call, can be stopped by cancel().
        stoppable = is_async or stops_plain_call(is_async, options)
        future: TaskFuture[Any] | LoopFuture[Any]
        if loop is None:
            future = TaskFuture(engine.cancel if stoppable else None, engine.wait_hook)
        else:
            future = LoopFuture(loop=loop)
            if stoppable:
                future._remote_cancel = engine.cancel
        engine.submit(Task(future, call, is_async, options))
        return future

    def _submit_direct(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """The executor's own API (map, amap): a worker, whoever runs the loop."""
        return self._submit(fn, args, {}, False, None)  # type: ignore[return-value]

    @overload
    def map(
        self,
        fn: Callable[..., Awaitable[T]],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> MapIterator[T]: ...

    @overload
    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> MapIterator[T]: ...

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> MapIterator[Any]:
        """Like ``Executor.map``: ``fn`` over the zipped ``iterables`` in workers, results in
        input order. ``chunksize`` inputs travel per task; with ``buffersize`` (Python 3.14's
        argument), at most that many tasks run ahead of the consumer, so an endless input is
        fine. ``timeout`` bounds the whole iteration (``TimeoutError``). Leaving the
        iteration early cancels what was not consumed."""
        check_map_arguments(chunksize, buffersize)
        count = input_count(iterables)
        inputs, call_for = map_inputs(fn, iterables, chunksize)
        return map_results(
            self,
            call_for,
            inputs,
            timeout=timeout,
            chunked=chunksize > 1,
            buffersize=buffersize,
            count=count,
        )

    # -- asyncio-native API -----------------------------------------------------------------

    @overload
    async def run(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T: ...

    @overload
    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T: ...

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``await ex.run(fn, *args)``: run ``fn`` in a worker and await its result in the
        caller's event loop (a plain function too: this is the executor's own API).

        Cancelling the awaiting task cancels the coroutine in the worker. Works in asyncio's
        debug mode and on uvloop, which refuse coroutine functions in ``run_in_executor``.
        """
        future = self._submit(fn, args, kwargs, False, asyncio.get_running_loop())
        return await asyncio.wrap_future(future)

    @overload
    def amap(
        self,
        fn: Callable[..., Awaitable[T]],
        *iterables: Iterable[Any],
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> AsyncMapIterator[T]: ...

    @overload
    def amap(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> AsyncMapIterator[T]: ...

    def amap(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> AsyncMapIterator[Any]:
        """``async for r in ex.amap(fn, xs)``: results in input order.

        At most ``buffersize`` tasks (default: twice the executor's task slots) run ahead of
        the consumer; leaving the loop early cancels the rest.
        """
        check_map_arguments(chunksize, buffersize)
        if buffersize is None:
            options = self._engine.options
            buffersize = 2 * options.max_workers * options.child_concurrency
        count = input_count(iterables)
        inputs, call_for = map_inputs(fn, iterables, chunksize)
        # Its tasks get concurrent futures, bridged when awaited: an iterator may be carried on
        # in another event loop (asyncio.run twice), which a loop's own futures would not
        # survive.
        return AsyncMapIterator(
            self, call_for, inputs, chunked=chunksize > 1, buffersize=buffersize, count=count
        )

    @overload
    def as_completed(
        self, fs: Iterable[Future[T]], *, timeout: float | None = None
    ) -> AsCompleted[Future[T]]: ...

    @overload
    def as_completed(
        self, fs: Iterable[Awaitable[T]], *, timeout: float | None = None
    ) -> AsCompleted[asyncio.Future[T]]: ...

    def as_completed(self, fs: Iterable[Any], *, timeout: float | None = None) -> AsCompleted[Any]:
        """``async for future in ex.as_completed(fs)``: each of ``fs`` as soon as it is done.

        ``fs``: futures of ``submit``, asyncio futures, or awaitables such as
        ``ex.run(...)`` (each becomes a task, which is yielded in its place). The futures
        themselves are yielded, so a dict from future to input still works; ask each for its
        ``result()``. ``len()`` is how many are still to come (``tqdm.asyncio.tqdm`` reads
        it). ``timeout``: seconds for the whole iteration, then ``TimeoutError``. Leaving
        the loop early cancels nothing.
        """
        return AsCompleted(fs, timeout)

    # -- per-call options and statistics -----------------------------------------------------

    def options(
        self, *, timeout: float | None = None, stoppable: bool = False, grace: float = 1.0
    ) -> Self:
        """This executor, with options for the calls made through what it returns.

        ```python
        result = await ex.options(timeout=5).run(parse, page)
        future = ex.options(stoppable=True).submit(crunch, data)
        future.cancel()  # True while it runs: the call is stopped
        ```

        ``timeout``: seconds a task may run, counted from when a worker starts it; then a
        coroutine is cancelled in its worker, a plain call is stopped (as below), and the
        future fails with ``aioexec.TaskTimeout``. ``stoppable``: a plain call runs alone in
        a worker, so that ``cancel()`` can stop it: ``aioexec.TaskStopped`` is raised in it
        (its ``finally`` blocks run), and if it has not returned ``grace`` seconds later its
        worker is killed; either way that worker is then replaced, so a stoppable call costs
        a worker's start-up. A ``timeout`` makes a plain call stoppable.

        The view shares the executor (its workers, its shutdown); only the options differ.
        """
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(
                f"timeout must be a positive number of seconds or None, not {timeout!r}"
            )
        if not (isinstance(grace, (int, float)) and grace >= 0):
            raise ValueError(f"grace must be a number of seconds >= 0, not {grace!r}")
        view = copy.copy(self)
        view._task_options = TaskOptions(timeout, bool(stoppable), float(grace))
        return view

    def stats(self) -> Stats:
        """A snapshot of the executor: its workers (pid, state, tasks in flight, done and
        failed, when each started, how the one it replaced ended), queued tasks, and totals.
        Cheap: nothing is asked of a worker."""
        return dataclasses.replace(self._engine.stats(), thread_calls=self._local_threads.calls)

    # -- shutting down ----------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; the workers exit once the submitted work is done.

        ``cancel_futures=True`` cancels the work that has not started. With ``wait=True``,
        returns when every worker has exited and every thread has stopped.
        """
        self._closed = True
        self._engine.shutdown(cancel_futures)
        self._local_threads.shutdown(wait, cancel_futures)
        if wait:
            self._engine.join()

    def terminate_workers(self) -> None:
        """Shut down without waiting, cancel queued work and SIGTERM every worker.

        For workers stuck in blocking code; their running tasks fail with
        ``BrokenWorkerError``. Python 3.14's ``ProcessPoolExecutor`` has the same method.
        """
        self._force_shutdown(operation=_TERMINATE)

    def kill_workers(self) -> None:
        """Like ``terminate_workers()``, with SIGKILL."""
        self._force_shutdown(operation=_KILL)

    def _force_shutdown(self, operation: str) -> None:
        # ProcessPoolExecutor's name and argument (3.14), which its own tests call.
        if operation not in (_TERMINATE, _KILL):
            raise ValueError(f"Unsupported operation: {operation!r}")
        self.shutdown(wait=False, cancel_futures=True)
        self._engine.terminate(kill=operation == _KILL)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Shut down and wait, as ``ProcessPoolExecutor`` does.

        Leaving the block because of an exception (``KeyboardInterrupt`` included) first
        cancels the outstanding work, running coroutines included, as ``async with`` and a
        task group do; a second ``KeyboardInterrupt`` while it waits kills the workers. The
        block's own exception is the one that propagates.
        """
        if exc_type is None:
            self.shutdown(wait=True)
            return
        self._engine.cancel_all()
        try:
            self.shutdown(wait=True, cancel_futures=True)
        except KeyboardInterrupt:
            self.kill_workers()
            self._engine.join()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Await the shutdown without blocking the loop.

        Like a task group: leaving the block with an exception (cancellation included)
        first cancels the executor's outstanding work, running coroutines included.
        """
        if exc_type is not None:
            self._engine.cancel_all()
        loop = asyncio.get_running_loop()
        closed = loop.create_future()

        def wait_closed() -> None:
            self.shutdown(wait=True, cancel_futures=exc_type is not None)
            loop.call_soon_threadsafe(_set_done, closed)

        threading.Thread(target=wait_closed, name="aioexec-shutdown", daemon=True).start()
        await closed
