"""The parent's descriptors for its children, and what a fork of the parent does with them.

Neighbours: ``_local.process`` opens each child's pipes here, ``_local.pipeio.Wakeup`` its
self-pipe, ``_local.lease`` its duplicates, and ``_local.manager`` registers its selector;
each of them closes them here too. ``_local.engine.LocalEngine`` registers itself to hear of
a fork.

Why: a process forked while an executor is alive (``os.fork()``, multiprocessing's ``fork``
start method, a library that forks) inherits copies of every descriptor. Holding the write end
of a child's input pipe, it would keep that child alive after the parent died (the child sees
end of file only when every copy is closed): an orphan. And it inherits the executor without
its manager thread: a submission there would write into the parent's children with the
parent's task numbers. So, in every forked process, an at-fork hook closes every descriptor
registered here and tells every engine that it was inherited (it then refuses work with an
error that says so). Python does not offer close-on-fork; this is the same idea in Python.

Rules that keep it correct:

* Every descriptor listed here is opened and closed only through this module, under ``_lock``,
  which the at-fork hook holds across the fork: a fork never sees a half-registered pipe.
* After the hook ran in a forked process the registry is empty, so a later ``close()`` there
  (a garbage collector finalizing the parent's objects) never closes a descriptor number that
  something else reuses by then.
* The one fork that must keep two of them is the parent's own ``fork``-method child: it keeps
  its own ends of its pipes (:func:`keeping`, a per-thread setting read in the forking thread).
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Protocol

__all__ = ["close", "disown", "dup", "keeping", "own", "pipe", "track"]


class Inheritor(Protocol):
    def on_forked(self) -> None:
        """Called in a forked process, for an object inherited from its parent."""
        ...


_lock = threading.Lock()
_owned: set[int] = set()  # descriptors of this process's executors, e.g. {7, 8, 12}
_engines: weakref.WeakSet[Inheritor] = weakref.WeakSet()  # to tell of a fork
_keep = threading.local()  # .fds: what the next fork from this thread keeps (see keeping)


def pipe() -> tuple[int, int]:
    """A new pipe (read end, write end), both ends registered; closed on exec too."""
    with _lock:
        read_fd, write_fd = os.pipe()
        _owned.update((read_fd, write_fd))
    return read_fd, write_fd


def dup(fd: int) -> int:
    """A registered duplicate of ``fd``."""
    with _lock:
        new = os.dup(fd)
        _owned.add(new)
    return new


def own(fd: int) -> None:
    """Register a descriptor opened elsewhere (a selector's)."""
    with _lock:
        _owned.add(fd)


def disown(fd: int) -> None:
    """Forget a registered descriptor that its owner is about to close itself."""
    with _lock:
        _owned.discard(fd)


def close(fds: Iterable[int]) -> None:
    """Close those of ``fds`` still registered (nothing, in a forked process)."""
    with _lock:
        for fd in fds:
            if fd in _owned:
                _owned.discard(fd)
                os.close(fd)


def track(engine: Inheritor) -> None:
    with _lock:
        _engines.add(engine)


@contextlib.contextmanager
def keeping(fds: Iterable[int]) -> Iterator[None]:
    """Forks started by this thread inside the block keep ``fds`` (a ``fork``-method child's
    own pipe ends), and close every other registered descriptor."""
    _keep.fds = frozenset(fds)
    try:
        yield
    finally:
        _keep.fds = frozenset()


def _before_fork() -> None:
    _lock.acquire()


def _after_fork_in_parent() -> None:
    _lock.release()


def _after_fork_in_child() -> None:
    global _lock
    keep: frozenset[int] = getattr(_keep, "fds", frozenset())
    for fd in _owned - keep:
        try:
            os.close(fd)
        except OSError:
            pass
    _owned.clear()
    engines = list(_engines)
    _engines.clear()
    _lock = threading.Lock()  # the parent's copy is held by the forking thread's hook
    for engine in engines:
        engine.on_forked()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
