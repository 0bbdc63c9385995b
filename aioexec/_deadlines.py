"""When an engine's manager thread must act without being woken: task timeouts and grace
periods.

Neighbours: ``_local.manager`` adds a deadline when it sends a task with a ``timeout`` and when
it stops a plain call (the call's grace period), sleeps in ``selector.select`` no longer than
:meth:`Deadlines.wait_time`, and acts on what :meth:`Deadlines.expired` returns;
``aioexec.ray._manager`` does the same around its mailbox's blocking ``get``. Each manager
thread alone uses its own (no lock). Nothing polls: with no deadline, the manager sleeps until
an event wakes it.
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import NamedTuple

__all__ = ["Deadline", "Deadlines"]


class Deadline(NamedTuple):
    when: float  # time.monotonic()
    seq: int  # ties keep their order (and never compare the fields below)
    task_id: int  # the task concerned
    grace: bool  # False: the task's timeout; True: the end of its stop's grace period
    seconds: float  # how long it was


class Deadlines:
    def __init__(self) -> None:
        self._heap: list[Deadline] = []
        self._seq = itertools.count()

    def add(self, seconds: float, task_id: int, grace: bool) -> None:
        when = time.monotonic() + seconds
        heapq.heappush(self._heap, Deadline(when, next(self._seq), task_id, grace, seconds))

    def wait_time(self) -> float | None:
        """How long the manager may sleep: None (until woken) without deadlines."""
        if not self._heap:
            return None
        return max(0.0, self._heap[0].when - time.monotonic())

    def expired(self) -> list[Deadline]:
        now = time.monotonic()
        due = []
        while self._heap and self._heap[0].when <= now:
            due.append(heapq.heappop(self._heap))
        return due
