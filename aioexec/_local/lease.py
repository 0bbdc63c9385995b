"""An event loop's lease on the children's answers: results read where they are awaited.

Neighbours: :class:`LeaseKeeper` belongs to the local engine (``_local.engine`` starts leases
from submitting threads, ``_local.manager`` follows them with its selector); :class:`LoopLease`
lives in the event loop that holds the lease and reads through ``_local.answers``; the
futures report every other wait through :meth:`LeaseKeeper.note_wait` (``_front.futures``).

Why: when the manager thread reads an answer, the answer wakes that thread, which then wakes
the event loop awaiting it and hands it the GIL. On a small machine those two hand-offs are
a large part of a round trip. So when ONE event loop is the only party that can be waiting
for the executor's answers, that loop reads the children's result pipes itself
(``loop.add_reader``) and the manager thread stops watching them: an answer wakes only the
thread that awaits it.

Safety (nothing may hang because a loop is busy, blocked or stopped): a lease starts only
when a running loop submits to an idle executor (no task in flight or queued), and it ends,
and the manager thread watches the pipes again, as soon as anything else could wait for an
answer:

- a submission from another thread or event loop, or one that must be queued: the manager
  thread sends queued work as answers free the slots, so it must read them (and a task
  must never wait, unsent, for a loop that may be blocked on the task's side effects);
- a blocking wait on a future: ``result()``, ``exception()``, ``wait()``, ``as_completed()``,
  from any thread, the loop's own included;
- a done-callback other than the lease loop's own ``wrap_future`` bridge;
- shutdown, or the executor breaking.

So the only answers a loop can hold back are the ones it alone waits for. The manager thread
then re-registers the pipes and asks the loop to drop its readers. The loop watches
duplicates of the pipes (``_local.forks.dup``), which it closes itself, so that its selector
never holds a descriptor that the manager closed and the system reused.

Shared state, with or without the GIL: ``_lease``, ``_leases`` and ``_stale`` are read and
written under ``_lock``, a leaf lock (nothing else is acquired while it is held), because
ending a lease happens wherever a wait starts, even under a future's condition. ``_reader``
is written by the reading thread under the pool's lock and read without it by
:meth:`in_reader`, which only ever compares it with the reading thread's own identity (a
thread always sees its own writes). A ``LoopLease``'s descriptors are touched only by its
loop's thread while the lease is reachable, and by its finalizer after.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Iterable

from .._cpython import wrap_future_bridge
from .._front.engine import OutcomeBatch, WaitHook, WorkerId
from . import forks
from .answers import Answers
from .messages import Deliver, Mailbox
from .pool import Pool
from .process import ChildProcess

__all__ = ["LeaseKeeper", "LoopLease"]


class LoopLease:
    """The loop's side of a lease: one reader per leased child. Used in the loop's thread."""

    def __init__(
        self,
        keeper: LeaseKeeper,
        loop: asyncio.AbstractEventLoop,
        children: Iterable[ChildProcess],
        batch: OutcomeBatch,
    ) -> None:
        self.keeper = keeper
        self.loop = loop
        self.completions = batch
        self._fds: dict[WorkerId, int] = {}
        # A loop closed before it dropped its readers never will: close the duplicates once
        # nothing (the loop's selector included) refers to this lease any more.
        weakref.finalize(self, _close_all, self._fds)
        try:
            for child in children:
                self._fds[child.worker_id] = fd = forks.dup(child.read_fd)
                loop.add_reader(fd, self._on_readable, child)
        except BaseException:
            self.unwatch_all()
            raise
        self.child_ids = frozenset(self._fds)

    def _on_readable(self, child: ChildProcess) -> None:
        try:
            if not self.keeper.read_leased(self, child):
                self._unwatch(child.worker_id)
        finally:  # what was read is delivered even if the read was interrupted
            if self.completions:
                self.completions.deliver(self.loop, self.keeper.post_deliver)

    def _unwatch(self, worker_id: WorkerId) -> None:
        fd = self._fds.pop(worker_id, None)
        if fd is not None:
            try:
                self.loop.remove_reader(fd)
            finally:
                forks.close((fd,))

    def unwatch_all(self) -> None:
        """Drop every reader (in the loop's thread, once the lease has ended)."""
        for worker_id in list(self._fds):
            self._unwatch(worker_id)


def _close_all(fds: dict[WorkerId, int]) -> None:
    forks.close(list(fds.values()))
    fds.clear()


def _weak_note_wait(ref: weakref.ref[LeaseKeeper]) -> WaitHook:
    def note_wait(fn: Callable[..., object] | None) -> None:
        keeper = ref()
        if keeper is not None:
            keeper.note_wait(fn)

    return note_wait


class LeaseKeeper:
    """Starts, checks and ends the leases of one local engine."""

    def __init__(
        self, pool: Pool, answers: Answers, mailbox: Mailbox, manager_thread: threading.Thread
    ) -> None:
        self._pool = pool
        self._answers = answers
        self._mailbox = mailbox
        self._manager_thread = manager_thread
        # What futures call (``_front.futures``): it holds this weakly, so that a future
        # kept by a caller (or by an error's traceback) does not keep the engine alive.
        self.wait_hook = _weak_note_wait(weakref.ref(self))
        self._lock = threading.Lock()  # a leaf lock: see the module docstring
        self._lease: LoopLease | None = None  # the lease in force
        self._leases: list[LoopLease] = []  # every lease whose loop may still watch
        self._stale = False  # the manager thread must re-check what it watches
        self._reader = 0  # the thread reading for a lease, while it holds the pool's lock
        self._refused_loop = 0  # id() of a loop without add_reader (e.g. Windows' proactor)

    # -- any thread, without the pool's lock ------------------------------------------------

    @property
    def current(self) -> LoopLease | None:
        """The lease in force, if any."""
        with self._lock:
            return self._lease

    def in_reader(self) -> bool:
        """True in a thread that reads answers under the pool's lock (the manager thread, or
        a lease loop while it reads): unpickling an answer there may submit."""
        ident = threading.get_ident()
        return ident == self._reader or ident == self._manager_thread.ident

    def note_wait(self, fn: Callable[..., object] | None) -> None:
        """A future gets a waiter (``fn``: a done-callback; None: a blocking wait)."""
        bridge = wrap_future_bridge(fn) if fn is not None else None
        with self._lock:
            lease = self._lease
            if lease is None:
                return
            if bridge is not None and bridge[0] is lease.loop:
                return  # the lease loop's own bridge: it awaits, which the lease covers
            self._end_locked()
        self._mailbox.wakeup.notify()

    def end_lease(self) -> None:
        with self._lock:
            if self._lease is None:
                return
            self._end_locked()
        self._mailbox.wakeup.notify()

    def _end_locked(self) -> None:
        self._lease = None
        self._stale = True

    def post_deliver(self, batch: OutcomeBatch) -> None:
        self._mailbox.post(Deliver(batch))

    # -- a submitting thread, under the pool's lock ----------------------------------------

    def lease_for(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Before a submission from ``loop`` (None: no loop runs in this thread)."""
        pool = self._pool
        with self._lock:
            lease = self._lease
        if lease is not None:
            if lease.loop is not loop:
                self.end_lease()
            # A child was replaced since (max_tasks_per_child, a crash): cover the new one.
            if lease.loop is not loop or lease.child_ids == pool.children.keys():
                return
        if loop is None or id(loop) == self._refused_loop or self._mailbox or not pool.idle():
            return
        self.end_lease()
        try:
            lease = LoopLease(self, loop, pool.children.values(), pool.options.workers.new_batch())
        except (NotImplementedError, OSError, RuntimeError):
            self._refused_loop = id(loop)
            return
        with self._lock:
            self._leases.append(lease)  # first: whatever happens next, the manager can end it
            self._stale = True
            self._lease = lease
        self._mailbox.wakeup.notify()

    # -- the lease loop's thread -------------------------------------------------------------

    def read_leased(self, lease: LoopLease, child: ChildProcess) -> bool:
        """Read ``child``'s answers into the lease's batch; False: stop watching it."""
        pool = self._pool
        with pool.lock:
            with self._lock:
                current = self._lease is lease
            if not current or child.worker_id not in pool.children or child.eof:
                return False
            self._reader = threading.get_ident()
            pool.completions = lease.completions
            try:
                more = self._answers.read(child)
            except BaseException:
                self.end_lease()  # the manager thread reads again
                child.abort("a read of its pipe was interrupted (KeyboardInterrupt?)")
                raise
            finally:
                pool.completions = pool.turn_completions
                self._reader = 0
            child.eof = child.eof or not more
            return more

    # -- the manager thread, under the pool's lock -------------------------------------------

    def take_changes(self) -> tuple[frozenset[WorkerId], list[LoopLease]] | None:
        """If the leases changed since the last call: the children a lease covers now, and
        the ended leases whose loops must drop their readers; else None."""
        with self._lock:
            if not self._stale:
                return None
            self._stale = False
            lease = self._lease
            ended = [old for old in self._leases if old is not lease]
            self._leases = [lease] if lease is not None else []
        return (lease.child_ids if lease is not None else frozenset()), ended
