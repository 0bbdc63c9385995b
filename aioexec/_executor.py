"""``AsyncProcessExecutor``: the front (``_front``) on the local process engine (``_local``).

Neighbours: a composition root, the one module that imports both the front and the local
engine; ``aioexec`` re-exports the class. Besides joining the two it keeps what
``ProcessPoolExecutor``'s callers (its own tests among them) read: ``_processes``,
``_executor_manager_thread``, ``_call_queue.join_thread()``, ``_broken``, ``_mp_context``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from ._front.executor import ExecutorFront
from ._front.options import Fallback, check_fallback, start_context, worker_options
from ._front.scheduler import SchedulerSpec
from ._local.child import ChildConfig
from ._local.engine import LocalEngine
from ._local.pool import LocalOptions

__all__ = ["AsyncProcessExecutor"]


class AsyncProcessExecutor(ExecutorFront):
    """A ``concurrent.futures`` executor whose workers are child processes running asyncio.

    Submit a coroutine function or a plain function with ``submit``, ``map``, ``run`` (await)
    or ``amap`` (async for): it runs in a child process, and its result, exception (with its
    own type and the child's traceback as ``__cause__``) or cancellation comes back as a
    future. Many coroutines run at once in each child's event loop; plain functions run one
    at a time per child, in a thread of the child, so its coroutines keep running.

    As asyncio's default executor (``loop.set_default_executor(ex)``) it keeps thread
    semantics for plain callables: ``run_in_executor(None, fn)`` runs ``fn`` on a thread of
    this process, as asyncio's own default executor would; only coroutine functions (and
    callables wrapped in ``aioexec.in_child``) go to a child. That is why it subclasses
    ``ThreadPoolExecutor``: asyncio accepts nothing else as a default executor.

    Arguments, results and exceptions cross between processes as pickles: submit only
    functions and data that come from trusted code.

    Args:
        max_workers: how many child processes at most (they start on demand). Default: the
            CPUs this process may use.
        mp_context: how children start: a ``multiprocessing`` context or a start-method
            name (``"forkserver"``, ``"spawn"``, ``"fork"``). Default: ``"forkserver"`` on
            Linux, else ``"spawn"`` (``"spawn"`` when ``max_tasks_per_child`` is given).
        initializer: a callable (plain or ``async def``) run once in every child, on its
            event loop, before its first task; if it fails, the executor breaks
            (``BrokenPoolError``), as ``ProcessPoolExecutor`` does.
        initargs: the initializer's arguments (a tuple).
        max_tasks_per_child: retire a child after this many tasks: it finishes what it
            runs, exits, and a fresh child takes its place. Default: never.
        child_concurrency: how many coroutines run at once in one child (default 16). More
            tasks wait in the parent until a child has room, so cancelling them is instant.
        scheduler: which child with room gets a task: ``"least-loaded"`` (default: the child
            with the fewest tasks in flight, keeping the last one chosen among equals),
            ``"round-robin"``, or an object with a ``choose(candidates)`` method
            (``aioexec.Scheduler``).
        loop_factory: makes each child's event loop, e.g. ``uvloop.new_event_loop``
            (default: asyncio's). It must return a new event loop.
        fallback: what happens to a call bound for a child that cannot be pickled (a lambda,
            a nested function, an argument holding a lock or socket): ``"thread"`` (default)
            runs it on a thread of this process; ``"error"`` fails its future with an error
            that names what could not be pickled, as ``ProcessPoolExecutor`` does;
            ``"cloudpickle"`` (the ``cloudpickle`` extra) sends it by value.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: BaseContext | str | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        child_concurrency: int = 16,
        scheduler: SchedulerSpec = "least-loaded",
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        fallback: Fallback = "thread",
    ) -> None:
        """Create the executor; no child starts before the first task. The arguments are
        described in the class docstring."""
        workers = worker_options(
            max_workers,
            initializer,
            initargs,
            max_tasks_per_child,
            child_concurrency,
            scheduler,
            loop_factory,
        )
        ctx = start_context(mp_context, max_tasks_per_child)
        child = ChildConfig(
            workers.initializer,
            workers.initargs,
            workers.loop_factory,
            forked=ctx.get_start_method() == "fork",
        )
        self._mp_context = ctx
        # ProcessPoolExecutor's lock for its _force_shutting_down flag, which its own tests
        # take; here the flag is the engine's, and safe without it.
        self._shutdown_lock = threading.Lock()
        self._local_engine = LocalEngine(
            LocalOptions(workers, ctx, child), name=f"aioexec-manager-{id(self):x}"
        )
        super().__init__(self._local_engine, check_fallback(fallback))

    # -- what code written against ProcessPoolExecutor reads ----------------------------------

    @property
    def _processes(self) -> dict[int, BaseProcess]:
        """pid -> process of the live children (a snapshot)."""
        manager = self._local_engine.manager
        return dict(manager.pool.children_snapshot) if manager is not None else {}

    @property
    def _executor_manager_thread(self) -> threading.Thread | None:
        """The manager thread (ProcessPoolExecutor's attribute of the same name)."""
        manager = self._local_engine.manager
        return manager.thread if manager is not None else None

    @property
    def _call_queue(self) -> _CallQueueView:
        """Compatibility with code that waits for ProcessPoolExecutor's call-queue feeder
        thread: here the manager thread does that job, so ``join_thread()`` joins it."""
        return _CallQueueView(self._executor_manager_thread)

    @property
    def _force_shutting_down(self) -> bool:
        """ProcessPoolExecutor's flag (3.14): terminate_workers()/kill_workers() began, and no
        worker may start any more. Its own tests set it under ``_shutdown_lock``."""
        return self._local_engine.forced

    @_force_shutting_down.setter
    def _force_shutting_down(self, value: bool) -> None:
        if value:
            self._local_engine.force()

    @property
    def _broken(self) -> str | bool:  # type: ignore[override]
        return self._local_engine.broken or False


class _CallQueueView:
    def __init__(self, thread: threading.Thread | None) -> None:
        self._thread = thread

    def join_thread(self) -> None:
        if self._thread is not None and self._thread.ident is not None:
            self._thread.join()
