"""``AsyncProcessExecutor``: the public front (submit, map, run, amap, shutdown).

Neighbours: calls are classified and pickled by ``_calls`` in the caller's thread, handed to
the executor's ``_manager`` thread, and come back as ``_future.TaskFuture`` (or, for a task
awaited in an event loop, ``_future.LoopFuture``); ``_mapping`` builds ``map``/``amap`` on top
of ``submit``.

The executor subclasses ``ThreadPoolExecutor`` because ``loop.set_default_executor`` accepts
nothing else since Python 3.11. It does not reuse that class's machinery: work that stays in
this process (asyncio's own calls, and calls that cannot be pickled when ``fallback`` is
"thread") runs on a private ``ThreadPoolExecutor`` sized as asyncio's default one, so
``asyncio.to_thread`` keeps its usual concurrency whatever ``max_workers`` is.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

if TYPE_CHECKING:
    # Only for type checkers: importing typing_extensions costs 1.4 - 1.7 ms, in the parent
    # and in every child whose main module imports aioexec.
    from typing_extensions import Self

from ._calls import (
    cloudpickle_call,
    is_asyncio_internal,
    is_coroutine_callable,
    pickle_call,
    run_coroutine_function,
)
from ._compat import ProcessPoolAttributes
from ._errors import BrokenPoolError
from ._future import LoopFuture, TaskFuture, run_in_executor_loop
from ._manager import Manager, WorkItem
from ._mapping import AsyncMapIterator, check_map_arguments, map_results, prepare_map
from ._options import Fallback, resolve_options
from ._scheduler import SchedulerSpec

__all__ = ["AsyncProcessExecutor"]

P = ParamSpec("P")
T = TypeVar("T")

_live_managers: weakref.WeakSet[Manager] = weakref.WeakSet()
_interpreter_exiting = False


def _at_interpreter_exit() -> None:
    """Like ProcessPoolExecutor: let submitted work finish, then stop children and threads."""
    global _interpreter_exiting
    _interpreter_exiting = True
    managers = list(_live_managers)
    for manager in managers:
        manager.post("shutdown", False)
    for manager in managers:
        manager.thread.join()


threading._register_atexit(_at_interpreter_exit)  # type: ignore[attr-defined]


def _failed_future(exc: BaseException) -> Future[Any]:
    # Made here, not in submit()'s except block: there, the exception's traceback would hold
    # submit()'s frame, whose locals would hold this future: a cycle only the gc can free.
    failed: Future[Any] = Future()
    failed.set_exception(exc)
    return failed


def _defined_in_main(fn: object) -> bool:
    return getattr(fn, "__module__", None) == "__main__"


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# The ignore: ProcessPoolAttributes._broken, a property, stands for the attribute that
# ThreadPoolExecutor.__init__ (not called, see above) would set.
class AsyncProcessExecutor(ProcessPoolAttributes, ThreadPoolExecutor):  # type: ignore[misc]
    """A ``concurrent.futures`` executor whose workers are child processes running asyncio.

    Coroutine functions run concurrently inside each child (up to ``child_concurrency`` at
    once); plain functions run one at a time per child, off the child's event loop.
    Arguments and results are pickled: submit only functions and data from trusted code.
    See the README for the full contract.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        child_concurrency: int = 16,
        scheduler: SchedulerSpec = "least-loaded",
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        fallback: Fallback = "thread",
    ) -> None:
        # ThreadPoolExecutor.__init__ is deliberately not called: see the module docstring.
        self._config = resolve_options(
            max_workers,
            mp_context,
            initializer,
            initargs,
            max_tasks_per_child,
            child_concurrency,
            scheduler,
            loop_factory,
            fallback,
        )
        self._max_workers = self._config.max_workers
        self._mp_context = self._config.ctx
        self._fallback = fallback
        self._loop_factory = loop_factory
        self._lock = threading.Lock()  # makes submit and shutdown atomic with each other
        self._shut_down = False
        self._manager: Manager | None = None  # started by the first task for a child
        self._local_threads: ThreadPoolExecutor | None = None  # started by the first local call

    # -- submitting -------------------------------------------------------------------------

    @overload
    def submit(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Future[T]: ...

    @overload
    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]: ...

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` in a child (awaited there if it is a coroutine function).

        Returns a ``concurrent.futures.Future``; cancelling it while the coroutine runs
        cancels the coroutine in the child. (Called by asyncio's ``run_in_executor``, it
        returns the asyncio future that ``run_in_executor`` hands back to its caller.)
        """
        return self._submit(fn, args, kwargs, run_in_executor_loop())  # type: ignore[return-value]

    def _submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        loop: asyncio.AbstractEventLoop | None,
    ) -> Future[Any] | LoopFuture[Any]:
        """Submit; ``loop``: the event loop that awaits the task, whose future is then a
        ``LoopFuture`` of that loop (unless the call runs in this process)."""
        self._check_open()  # again below, under the lock that orders it with shutdown
        if is_asyncio_internal(fn):
            return self._submit_local(fn, args, kwargs)
        manager = self._manager or self._open_manager()
        self._start_child_unless_one_is_idle(manager)
        try:
            try:
                if self._fallback == "cloudpickle" and _defined_in_main(fn):
                    # A child re-imports __main__ without running its guarded block, so
                    # functions defined there may be missing: send them by value.
                    raise pickle.PicklingError("a function of __main__")
                call = pickle_call(fn, args, kwargs)
            except Exception:
                if self._fallback == "thread":
                    return self._submit_local(fn, args, kwargs)
                if self._fallback != "cloudpickle":
                    raise
                call = cloudpickle_call(fn, args, kwargs)
        except Exception as exc:
            return _failed_future(exc)
        is_async = is_coroutine_callable(fn)
        future: TaskFuture[Any] | LoopFuture[Any]
        if loop is None:
            future = TaskFuture(manager.cancel_running if is_async else None, manager.wait_hook)
        else:
            future = LoopFuture(loop=loop)
            if is_async:
                future._remote_cancel = manager.cancel_running
        with self._lock:
            self._check_open()
            manager.submit(WorkItem(future, call, is_async))
        return future

    def _open_manager(self) -> Manager:
        with self._lock:
            self._check_open()
            return self._manager or self._start_manager()

    def _start_child_unless_one_is_idle(self, manager: Manager) -> None:
        """What ProcessPoolExecutor does in submit(): unless a task ended since the last
        submission (so a child is idle), start a child before returning, up to max_workers.
        Work then spreads over the children from the first submissions on, and a caller
        sees the children it asked for in ``_processes`` at once. (At ``max_workers`` the
        tokens are left: they only ever decide whether to start one.)"""
        if len(manager.children_snapshot) >= self._max_workers:
            return
        if manager.in_reader():
            return  # a done-callback or an unpickled answer submitting: dispatch will do
        if manager.take_ended_task():
            return
        started = threading.Event()
        manager.post("start_child", started)
        started.wait()  # the manager sets it on every path, exit included

    def _check_open(self) -> None:
        manager = self._manager
        if manager is not None and manager.broken is not None:
            raise BrokenPoolError(manager.broken)
        if self._shut_down:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if _interpreter_exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def _start_manager(self) -> Manager:
        manager = Manager(self._config, name=f"aioexec-manager-{id(self):x}")
        # When the executor is garbage-collected without shutdown(), finish its work and stop.
        manager.executor_ref = weakref.ref(self, lambda _: manager.post("shutdown", False))
        manager.thread.start()
        _live_managers.add(manager)
        self._manager = manager
        return manager

    def _submit_local(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> Future[Any]:
        with self._lock:
            if self._local_threads is None:
                self._local_threads = ThreadPoolExecutor(thread_name_prefix="aioexec-local")
            threads = self._local_threads
        if is_coroutine_callable(fn):
            return threads.submit(run_coroutine_function, fn, args, kwargs, self._loop_factory)
        return threads.submit(fn, *args, **kwargs)

    @overload
    def map(
        self,
        fn: Callable[..., Awaitable[T]],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[T]: ...

    @overload
    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[T]: ...

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        """Like ``Executor.map``: results in input order; ``chunksize`` inputs travel per
        task; with ``buffersize``, at most that many tasks are submitted ahead of the
        consumer (Python 3.14's ``Executor.map`` argument)."""
        check_map_arguments(chunksize, buffersize)
        call_for, inputs = prepare_map(fn, iterables, chunksize)
        return map_results(
            self, call_for, inputs, timeout=timeout, chunked=chunksize > 1, buffersize=buffersize
        )

    # -- asyncio-native API ---------------------------------------------------------------

    @overload
    async def run(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T: ...

    @overload
    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T: ...

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``await ex.run(fn, *args)``: submit and await in the caller's loop.

        Cancelling the awaiting task cancels the coroutine in the child.
        """
        future = self._submit(fn, args, kwargs, asyncio.get_running_loop())
        return await asyncio.wrap_future(future)

    @overload
    def amap(
        self,
        fn: Callable[..., Awaitable[T]],
        *iterables: Iterable[Any],
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> AsyncIterator[T]: ...

    @overload
    def amap(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> AsyncIterator[T]: ...

    def amap(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> AsyncIterator[Any]:
        """``async for r in ex.amap(fn, xs)``: results in input order.

        At most ``buffersize`` tasks (default: twice the executor's task slots) run ahead of
        the consumer; leaving the loop early cancels the rest.
        """
        check_map_arguments(chunksize, buffersize)
        if buffersize is None:
            buffersize = 2 * self._max_workers * self._config.child_concurrency
        call_for, inputs = prepare_map(fn, iterables, chunksize)
        # Its tasks get concurrent futures, bridged when awaited: an iterator may be carried on
        # in another event loop (asyncio.run twice), which a loop's own futures would not
        # survive.
        return AsyncMapIterator(
            self, call_for, inputs, chunked=chunksize > 1, buffersize=buffersize
        )

    # -- shutting down --------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; children exit once the submitted work is done.

        ``cancel_futures=True`` cancels the work that has not started. With ``wait=True``,
        returns when every child has exited and every thread has stopped.
        """
        with self._lock:
            self._shut_down = True
            manager, threads = self._manager, self._local_threads
        if manager is not None:
            manager.post("shutdown", cancel_futures)
        if threads is not None:
            threads.shutdown(wait=wait, cancel_futures=cancel_futures)
        if wait and manager is not None and threading.current_thread() is not manager.thread:
            manager.thread.join()

    def terminate_workers(self) -> None:
        """Shut down without waiting, cancel queued work and SIGTERM every child.

        For children stuck in blocking code; their running tasks fail with
        ``BrokenWorkerError``. Python 3.14's ``ProcessPoolExecutor`` has the same method.
        """
        self._force_shutdown(kill=False)

    def kill_workers(self) -> None:
        """Like :meth:`terminate_workers`, with SIGKILL."""
        self._force_shutdown(kill=True)

    def _force_shutdown(self, kill: bool) -> None:
        self.shutdown(wait=False, cancel_futures=True)
        if self._manager is not None:
            self._manager.post("terminate", kill)

    def __enter__(self) -> Self:
        return self

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
            self._cancel_outstanding()
        loop = asyncio.get_running_loop()
        closed = loop.create_future()

        def wait_closed() -> None:
            self.shutdown(wait=True, cancel_futures=exc_type is not None)
            loop.call_soon_threadsafe(_set_done, closed)

        threading.Thread(target=wait_closed, name="aioexec-shutdown", daemon=True).start()
        await closed

    def _cancel_outstanding(self) -> None:
        if self._manager is not None:
            self._manager.post("cancel_all")
