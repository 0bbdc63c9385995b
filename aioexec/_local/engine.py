"""The local process engine: the ``_front.engine.Engine`` of ``AsyncProcessExecutor``.

Neighbours: the front hands calls to :class:`LocalEngine`; it pickles them with
``_worker.codec``, and either writes a task to a child itself (the fast path below) or posts
it to the manager thread (``_local.manager``), which owns everything else; ``_local.pool`` is
the state they share, ``_local.lease`` lets an event loop read its own answers, and
``_local.forks`` keeps a forked process from using what it inherited.

The fast path: a submitting thread that finds a child with room, and no task of its kind
queued ahead, writes the task's frame to the child's pipe itself, under the pool's lock, so
the common case costs no thread hop. Everything else (a queue, a full pipe, starting a child,
a submission made while answers are being read) goes to the manager thread.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from .._cpython import running_loop
from .._engines import check_open, stop_at_exit
from .._front.engine import EngineFuture, Stats, Task, WaitHook, WorkerOptions
from .._worker.codec import Payload, pickle_call
from . import forks
from .manager import Manager
from .messages import CancelAll, Shutdown, StartChild, Terminate
from .pool import LocalOptions
from .process import ChildProcess

__all__ = ["LocalEngine"]

_LOGGER = logging.getLogger("aioexec")
_NO_STATS = Stats((), 0, 0, 0, 0, 0, 0, 0, 0, 0, None)  # before the first task for a worker


class LocalEngine:
    """Child processes on this machine, each running an asyncio event loop."""

    def __init__(self, options: LocalOptions, name: str) -> None:
        self.options: WorkerOptions = options.workers
        self._local = options
        self._name = name
        self._lock = threading.Lock()  # starting the manager
        self._manager: Manager | None = None  # started by the first task for a worker
        self._closed = False  # shutdown() was called (written once, by shutdown)
        self._forked_from = 0  # the parent's pid, in a process that inherited this by fork
        # A child cannot re-import a __main__ without a file (python -c, stdin, a notebook):
        # what it defines is sent by value, when cloudpickle can (see prepare).
        self._main_by_value = options.ctx.get_start_method() != "fork" and _main_unimportable()
        forks.track(self)

    # -- the door ---------------------------------------------------------------------------

    def prepare(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        by_value: bool,
    ) -> Payload:
        if by_value or not self._main_by_value:
            return pickle_call(fn, args, kwargs, by_value=by_value)
        try:
            payload = pickle_call(fn, args, kwargs, by_value=False)
        except Exception:
            # What plain pickle cannot send at all (a lambda, a nested function) goes by
            # value too when this __main__ defined it; anything else follows `fallback`.
            if getattr(fn, "__module__", None) != "__main__":
                raise
            return pickle_call(fn, args, kwargs, by_value=True)
        if b"__main__" in payload.body:
            payload = pickle_call(fn, args, kwargs, by_value=True)
        return payload

    def open(self) -> None:
        """Get ready for a task: start the manager thread if it is not running, and a child
        as ProcessPoolExecutor's submit does (before the call is pickled); raise if no work
        can be taken."""
        manager = self._manager
        if manager is None:
            with self._lock:
                self._check_usable()
                manager = self._manager
                if manager is None:
                    manager = Manager(self._local, name=self._name)
                    manager.thread.start()
                    stop_at_exit(self)
                    self._manager = manager
        self._check_usable()
        self._start_child_unless_one_is_idle(manager)

    def submit(self, task: Task) -> None:
        manager = self._manager
        assert manager is not None, "open() first"
        lease = manager.lease
        if not lease.in_reader():
            # Without the lock first: in a burst, the tasks behind a queued one are queued
            # too (see _send_now) and need not wait for the lock the manager thread holds
            # while it dispatches. A task with options always goes to the manager thread,
            # which keeps its deadlines.
            # And not while the manager thread holds the lock: it is busy with answers, and
            # will send the task with the others it dispatches, in one write per child.
            lock = manager.pool.lock
            if (
                task.options is None
                and not self._work_waits(manager, task)
                and lock.acquire(blocking=False)
            ):
                try:
                    lease.lease_for(running_loop())
                    if self._send_now(manager, task):
                        return
                finally:
                    lock.release()
            # Queued: the manager thread dispatches it when an answer frees a slot, so it
            # must read the answers.
            lease.end_lease()
        manager.post(task)

    def cancel(self, future: EngineFuture) -> None:
        if self._manager is not None:
            self._manager.cancel_running(future)

    def cancel_all(self) -> None:
        if self._manager is not None:
            self._manager.post(CancelAll())

    @property
    def wait_hook(self) -> WaitHook | None:
        return self._manager.lease.wait_hook if self._manager is not None else None

    @property
    def broken(self) -> str | None:
        return self._manager.pool.broken if self._manager is not None else None

    def in_engine_thread(self) -> bool:
        return self._manager is not None and self._manager.lease.in_reader()

    def shutdown(self, cancel_futures: bool) -> None:
        self._closed = True
        if self._manager is not None:
            self._manager.post(Shutdown(cancel_futures))

    def join(self) -> None:
        manager = self._manager
        if (
            manager is not None
            and threading.current_thread() is not manager.thread
            and manager.thread.ident is not None  # started (not in a forked process)
        ):
            manager.thread.join()

    def terminate(self, kill: bool) -> None:
        if self._manager is not None:
            self.force()
            self._manager.post(Terminate(kill))

    @property
    def forced(self) -> bool:
        """terminate_workers()/kill_workers() began: no child starts any more."""
        manager = self._manager
        return manager is not None and manager.pool.forced

    def force(self) -> None:
        """Start no child any more (the first step of terminate/kill; ProcessPoolExecutor's
        ``_force_shutting_down``); queued work that no child is left to run fails."""
        manager = self._manager
        if manager is not None:
            with manager.pool.lock:
                manager.pool.forced = True
            manager.mailbox.wakeup.notify()

    def stats(self) -> Stats:
        manager = self._manager
        if manager is None:
            return _NO_STATS
        with manager.pool.lock:
            return manager.pool.stats()

    # -- what ProcessPoolExecutor-minded callers read -----------------------------------------

    @property
    def manager(self) -> Manager | None:
        return self._manager

    # -- fork -------------------------------------------------------------------------------

    def on_forked(self) -> None:
        """In a process forked from ours: this engine was inherited, with none of its threads
        and none of its descriptors (``_local.forks`` closed them). It refuses work."""
        import os

        self._forked_from = os.getppid()
        manager = self._manager
        if manager is not None:
            manager.pool.exited = True
            manager.mailbox.wakeup.disown()

    # -- helpers ----------------------------------------------------------------------------

    def _check_usable(self) -> None:
        check_open(self._closed, self._forked_from)

    def _start_child_unless_one_is_idle(self, manager: Manager) -> None:
        """What ProcessPoolExecutor does in submit(): unless a task ended since the last
        submission (so a child is idle), start a child before returning, up to max_workers.
        Work then spreads over the children from the first submissions on, and a caller
        sees the children it asked for in ``_processes`` at once. (At ``max_workers`` the
        tokens are left: they only ever decide whether to start one.)"""
        pool = manager.pool
        if len(pool.children_snapshot) >= pool.max_workers:
            return
        if manager.lease.in_reader():
            return  # a done-callback or an unpickled answer submitting: dispatch will do
        with pool.lock:
            if pool.take_ended_task():
                return
        started = threading.Event()
        manager.post(StartChild(started))
        started.wait()  # the manager sets it on every path, its exit included

    @staticmethod
    def _work_waits(manager: Manager, task: Task) -> bool:
        """Work of ``task``'s kind, or any message, waits for the manager thread."""
        return bool(manager.mailbox or manager.pool.queue_for(task))

    def _send_now(self, manager: Manager, task: Task) -> bool:
        pool = manager.pool
        if pool.exited or pool.broken is not None or pool.shutting_down:
            return False
        if self._work_waits(manager, task):
            return False  # first come, first served
        child, start = pool.child_with_room(task)
        if child is None or start:
            return False
        try:
            # A future cancelled meanwhile is dropped: it never runs. A full pipe is left to
            # the manager thread, which waits for room.
            if task.future.start_running() and not child.send_now(
                pool.task_frame(child, task), task
            ):
                manager.mailbox.wakeup.notify()
        except BaseException:
            self._abandon(manager, child, task)
            raise
        return True

    @staticmethod
    def _abandon(manager: Manager, child: ChildProcess, task: Task) -> None:
        """A send from a caller's thread was interrupted: the task counts as running on the
        child, which is stopped, so that it fails with the child's other tasks."""
        if task.future.task_id not in child.running:
            manager.pool.record_running(child, task)
        child.abort("a write to its pipe was interrupted (KeyboardInterrupt?)")


def _main_unimportable() -> bool:
    """True when the main module has no file a spawned child could re-import."""
    main = sys.modules.get("__main__")
    return main is not None and getattr(main, "__file__", None) is None and _has_cloudpickle()


def _has_cloudpickle() -> bool:
    import importlib.util

    return importlib.util.find_spec("cloudpickle") is not None
