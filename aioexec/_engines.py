"""What every engine shares beyond the interface: totals, shared messages, interpreter exit.

Neighbours: the local engine (``_local``) and the Ray engine (``aioexec.ray``) import this;
it imports only the engine interface (``_front.engine``) and ``_cpython``.

- :class:`Totals`: the counts behind ``ex.stats()``, kept by an engine's pool under its lock.
- The messages that a manager thread of either engine takes the same way (``Shutdown``,
  ``CancelAll``, ``Terminate``, ``Deliver``); each engine adds its own.
- :func:`stop_at_exit`: like ``ProcessPoolExecutor``, an engine still open at interpreter exit
  finishes its submitted work, then stops its workers, before non-daemon threads are joined;
  :func:`check_open` tells an engine to refuse new work from then on.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ._cpython import register_atexit
from ._front.engine import OutcomeBatch, Stats, WorkerStats

__all__ = [
    "CancelAll",
    "Deliver",
    "Shutdown",
    "Terminate",
    "Totals",
    "check_open",
    "stop_at_exit",
]


class Totals:
    """Tasks by outcome and workers by how they ended. Under the engine's pool lock."""

    __slots__ = ("cancelled", "done", "failed", "lost", "retired", "started")

    def __init__(self) -> None:
        self.done = self.failed = self.cancelled = 0  # tasks answered with each outcome
        self.started = self.retired = self.lost = 0  # workers: started, ended asked / unasked

    def stats(
        self, workers: Sequence[WorkerStats], queued: int, tasks_sent: int, broken: str | None
    ) -> Stats:
        return Stats(
            workers=tuple(workers),
            queued=queued,
            tasks_sent=tasks_sent,
            tasks_done=self.done,
            tasks_failed=self.failed,
            tasks_cancelled=self.cancelled,
            workers_started=self.started,
            workers_retired=self.retired,
            workers_lost=self.lost,
            thread_calls=0,  # the front's count
            broken=broken,
        )


@dataclass(frozen=True, slots=True)
class Deliver:
    """Outcomes whose plain callbacks must run in the manager thread (an event loop or
    another engine thread read them): deliver them there."""

    batch: OutcomeBatch


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Take no more work; ``cancel_futures``: cancel what has not started."""

    cancel_futures: bool


@dataclass(frozen=True, slots=True)
class CancelAll:
    """Cancel queued work and running coroutines (a ``with`` block left on an exception)."""


@dataclass(frozen=True, slots=True)
class Terminate:
    """SIGTERM (``kill``: SIGKILL) every worker now: ``terminate_workers()``/``kill_workers()``."""

    kill: bool


class Stoppable(Protocol):
    def shutdown(self, cancel_futures: bool) -> None: ...

    def join(self) -> None: ...


_open: weakref.WeakSet[Stoppable] = weakref.WeakSet()  # engines that may still run work
_exiting = False  # written once, by the exit hook


def stop_at_exit(engine: Stoppable) -> None:
    """Finish ``engine``'s work and stop it at interpreter exit, if it is still open then."""
    _open.add(engine)


def check_open(closed: bool, forked_from: int = 0) -> None:
    """Raise the ``RuntimeError`` that says why an engine takes no new work, if it takes
    none: it was shut down, the interpreter exits, or this process is a fork of the engine's
    (``forked_from``: the parent's pid)."""
    if forked_from:
        raise RuntimeError(
            f"aioexec: this executor belongs to process {forked_from}, and this process is a "
            "fork of it: its workers and threads stayed there. Create a new executor in this "
            "process (or start processes with the 'spawn' or 'forkserver' method)."
        )
    if closed:
        raise RuntimeError("cannot schedule new futures after shutdown")
    if _exiting:
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")


def _at_interpreter_exit() -> None:
    global _exiting
    _exiting = True
    engines = list(_open)
    for engine in engines:
        engine.shutdown(cancel_futures=False)
    for engine in engines:
        engine.join()


register_atexit(_at_interpreter_exit)
