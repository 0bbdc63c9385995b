"""An event loop's lease on the children's answers: results read where they are awaited.

Neighbours: :class:`Leasing` is mixed into ``_manager.Manager`` (it shares its state and
lock); :class:`LoopLease` lives in the event loop that holds the lease; ``_future.TaskFuture``
reports every other wait through :meth:`Leasing.note_wait`; answers are read by
``_answers.ChildEvents`` and delivered by ``_completion``.

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

So the only answers a loop can hold back are the ones it alone waits for. Ending a lease
takes no lock (it may happen under a future's condition); the manager thread then
re-registers the pipes, and asks the loop to drop its readers. The loop watches duplicates
of the pipes (``os.dup``), which it closes itself, so that its selector never holds a
descriptor that the manager closed and the system reused.
"""

from __future__ import annotations

import asyncio
import functools
import os
import selectors
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._completion import Completions, bridge_loop
from ._process import ChildProcess
from ._protocol import Frame
from ._scheduler import ChildId

__all__ = ["Leasing", "LoopLease"]


class LoopLease:
    """The loop's side of a lease: one reader per leased child. Used in the loop's thread."""

    def __init__(
        self, manager: Leasing, loop: asyncio.AbstractEventLoop, children: Iterable[ChildProcess]
    ) -> None:
        self.manager = manager
        self.loop = loop
        self.completions = Completions()
        self._fds: dict[ChildId, int] = {}
        # A loop closed before it dropped its readers never will: close the duplicates once
        # nothing (the loop's selector included) refers to this lease any more.
        weakref.finalize(self, _close_all, self._fds)
        try:
            for child in children:
                self._fds[child.child_id] = fd = os.dup(child.read_fd)
                loop.add_reader(fd, self._on_readable, child)
        except BaseException:
            self.unwatch_all()
            raise
        self.child_ids = frozenset(self._fds)

    def _on_readable(self, child: ChildProcess) -> None:
        try:
            if not self.manager.read_leased(self, child):
                self._unwatch(child.child_id)
        finally:  # what was read is delivered even if the read was interrupted
            if self.completions:
                self.completions.deliver(self.loop, self.manager.post)

    def _unwatch(self, child_id: ChildId) -> None:
        fd = self._fds.pop(child_id, None)
        if fd is not None:
            try:
                self.loop.remove_reader(fd)
            finally:
                os.close(fd)

    def fds(self) -> list[int]:
        return list(self._fds.values())

    def unwatch_all(self) -> None:
        """Drop every reader (in the loop's thread, once the lease has ended)."""
        for child_id in list(self._fds):
            self._unwatch(child_id)


def _weak_note_wait(ref: weakref.ref[Leasing]) -> Callable[[Callable[..., object] | None], None]:
    def note_wait(fn: Callable[..., object] | None) -> None:
        manager = ref()
        if manager is not None:
            manager.note_wait(fn)

    return note_wait


def _close_all(fds: dict[ChildId, int]) -> None:
    while fds:
        os.close(fds.popitem()[1])


class Leasing:
    """The manager's side: starting, checking and ending the lease."""

    if TYPE_CHECKING:  # the Manager's state this shares
        thread: threading.Thread
        broken: str | None
        _lock: threading.Lock
        _children: dict[ChildId, ChildProcess]
        _selector: selectors.BaseSelector
        _completions: Completions
        _turn_completions: Completions
        _running_on: dict[int, ChildProcess]
        _shutting_down: bool
        _exited: bool
        _inbox: deque[tuple[str, Any]]

        def _has_queued(self) -> bool: ...
        def _watch(self, child: ChildProcess) -> None: ...
        def _stop_cut_stream(self, child: ChildProcess) -> None: ...
        def _on_frame(self, child: ChildProcess, frame: Frame) -> None: ...
        def _notify(self) -> None: ...
        def post(self, op: str, arg: Any = None) -> None: ...

    def _init_leasing(self) -> None:
        # What futures call (see _future): it holds the manager weakly, so that a future
        # kept by a caller (or by an error's traceback) does not keep the manager alive.
        self.wait_hook = _weak_note_wait(weakref.ref(self))
        self._lease: LoopLease | None = None
        self._leases: list[LoopLease] = []  # every lease whose loop may still watch
        self._registrations_stale = False  # the manager thread must re-check what it watches
        self._reader_ident = 0  # the thread reading for a lease, while it holds the lock
        self._refused_loop = 0  # id() of a loop without add_reader (e.g. Windows' proactor)

    # -- any thread, without the lock ------------------------------------------------------

    def in_reader(self) -> bool:
        """True in a thread that reads answers under the lock (unpickling one may submit)."""
        ident = threading.get_ident()
        return ident == self._reader_ident or ident == self.thread.ident

    def note_wait(self, fn: Callable[..., object] | None) -> None:
        """A future gets a waiter (``fn``: a done-callback; None: a blocking wait)."""
        lease = self._lease
        if lease is not None and (fn is None or bridge_loop(fn) is not lease.loop):
            self.end_lease()

    def end_lease(self) -> None:
        if self._lease is not None:
            self._lease = None
            self._registrations_stale = True
            self._notify()

    # -- a submitting thread, under the lock ------------------------------------------------

    def _lease_for(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Before a submission from ``loop`` (None: no loop runs in this thread)."""
        lease = self._lease
        if lease is not None:
            if lease.loop is not loop:
                self.end_lease()
            # A child was replaced since (max_tasks_per_child, a crash): cover the new one.
            if lease.loop is not loop or lease.child_ids == self._children.keys():
                return
        if loop is None or id(loop) == self._refused_loop or not self._idle():
            return
        self.end_lease()
        try:
            lease = LoopLease(self, loop, self._children.values())
        except (NotImplementedError, OSError, RuntimeError):
            self._refused_loop = id(loop)
            return
        self._leases.append(lease)  # first: whatever happens next, the manager can end it
        self._registrations_stale = True
        self._lease = lease
        self._notify()

    def _idle(self) -> bool:
        return not (
            self._shutting_down
            or self.broken is not None
            or self._exited
            or self._running_on
            or self._inbox
            or self._has_queued()
            or not self._children
        )

    # -- the lease loop's thread ------------------------------------------------------------

    def read_leased(self, lease: LoopLease, child: ChildProcess) -> bool:
        """Read ``child``'s answers into the lease's completions; False: stop watching it."""
        with self._lock:
            if self._lease is not lease or child.child_id not in self._children:
                return False
            self._reader_ident = threading.get_ident()
            self._completions = lease.completions
            try:
                more = child.read(functools.partial(self._on_frame, child))
            except BaseException:
                self.end_lease()  # the manager thread reads again
                self._stop_cut_stream(child)
                raise
            finally:
                self._completions = self._turn_completions
                self._reader_ident = 0
            child.eof = not more
            return more

    # -- the manager thread, under the lock -------------------------------------------------

    def _sync_registrations(self) -> None:
        """Watch the result pipes that no lease covers; tell ended leases to let go."""
        if not self._registrations_stale:
            return
        self._registrations_stale = False
        lease = self._lease
        leased = lease.child_ids if lease is not None else frozenset()
        for child in self._children.values():
            watch = child.child_id not in leased and not child.eof
            if watch != child.watched:
                child.watched = watch
                if watch:
                    self._watch(child)
                else:
                    self._selector.unregister(child.read_fd)
        for old in self._leases:
            if old is not lease:
                try:
                    old.loop.call_soon_threadsafe(old.unwatch_all)
                except Exception:
                    pass  # a closed loop: the lease's finalizer closes its descriptors
        self._leases = [lease] if lease is not None else []
