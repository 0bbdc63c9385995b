"""The built-in schedulers: which worker gets the next task. Pure bookkeeping, no I/O.

Neighbours: an engine asks the executor's :class:`~aioexec._front.engine.Scheduler` to pick
among the workers that have room for a task; the engine alone keeps the counts it passes in.
``_front.options`` turns the ``scheduler`` argument into one with :func:`make_scheduler`.

A scheduler only ever sees workers with free capacity for the task at hand (the engine filters
them), so its job is fairness: which of several workers with room runs the task.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Literal

from .engine import Scheduler, WorkerId, WorkerLoad

__all__ = ["LeastLoaded", "LoadIndex", "RoundRobin", "SchedulerSpec", "make_scheduler"]


class LeastLoaded:
    """The worker with the fewest tasks in flight. Among equals, the worker chosen last if it
    is one of them, else the next one after it (so a burst spreads over all workers).

    Why the worker chosen last: when tasks are awaited one at a time, every worker is idle at
    each choice. Sending each task to the worker that just ran one keeps its process warm
    (its caches hot, its CPU awake); alternating between idle workers cost about 20 µs more
    per round trip in the latency benchmark on a 2-core machine, and gains nothing, since
    one task at a time runs on one worker either way."""

    def __init__(self) -> None:
        self._last: WorkerId = WorkerId(-1)

    def choose(self, candidates: Sequence[WorkerLoad]) -> WorkerLoad:
        last = self._last
        chosen = candidates[0]
        best = (chosen.in_flight, chosen.worker_id < last, chosen.worker_id)
        for worker in candidates[1:]:  # one pass: this runs for every task
            # Fewest in flight; then the last one chosen, or the ids after it, before the
            # ids that come round again.
            key = (worker.in_flight, worker.worker_id < last, worker.worker_id)
            if key < best:
                chosen, best = worker, key
        self._last = chosen.worker_id
        return chosen


class RoundRobin:
    """Each worker in turn, skipping workers without room."""

    def __init__(self) -> None:
        self._last: WorkerId = WorkerId(-1)

    def choose(self, candidates: Sequence[WorkerLoad]) -> WorkerLoad:
        after = [c for c in candidates if c.worker_id > self._last]
        chosen = min(after or candidates, key=lambda c: c.worker_id)
        self._last = chosen.worker_id
        return chosen


SchedulerSpec = Literal["least-loaded", "round-robin"] | Scheduler


def make_scheduler(spec: SchedulerSpec) -> Scheduler:
    """A fresh scheduler for ``spec`` (each executor keeps its own)."""
    if spec == "least-loaded":
        return LeastLoaded()
    if spec == "round-robin":
        return RoundRobin()
    if isinstance(spec, Scheduler) and not isinstance(spec, (str, type)):
        return spec
    message = (
        "scheduler must be 'least-loaded', 'round-robin' or an object with a "
        f"choose(candidates) method, not {spec!r}"
    )
    raise (ValueError if isinstance(spec, str) else TypeError)(message)


class LoadIndex:
    """Workers by load, so that ``LeastLoaded`` chooses in O(log n) instead of O(n).

    An engine with many workers keeps one (for ``LeastLoaded`` only; other schedulers see
    the candidates): it :meth:`add`\\ s a worker when it starts, says when its load moved,
    and :meth:`remove`\\ s it when it ends; :meth:`pick` returns what ``LeastLoaded.choose``
    would return among the usable workers: the least loaded, then the one chosen last, then
    the next id after it. A worker that is not usable (retiring, busy alone) is skipped;
    ``forget``: drop it for good (it will never be usable again).

    ``_ids[load]``: the sorted ids of the workers with that load, e.g. ``[[3], [0, 1]]``.
    """

    def __init__(self, scheduler: LeastLoaded) -> None:
        self._scheduler = scheduler
        self._ids: list[list[int]] = []
        self._workers: dict[int, WorkerLoad] = {}
        self._loads: dict[int, int] = {}

    def add(self, worker: WorkerLoad) -> None:
        self._workers[worker.worker_id] = worker
        self._put(worker.worker_id, worker.in_flight)

    def remove(self, worker: WorkerLoad) -> None:
        load = self._loads.pop(worker.worker_id, None)
        if load is not None:
            self._ids[load].remove(worker.worker_id)
            del self._workers[worker.worker_id]

    def moved(self, worker: WorkerLoad, old: int) -> None:
        """``worker``'s load changed from ``old`` to its ``in_flight`` now."""
        if self._loads.get(worker.worker_id) == old:
            self._ids[old].remove(worker.worker_id)
            self._put(worker.worker_id, worker.in_flight)

    def _put(self, worker_id: int, load: int) -> None:
        while len(self._ids) <= load:
            self._ids.append([])
        bisect.insort(self._ids[load], worker_id)
        self._loads[worker_id] = load

    def pick(
        self, usable: Callable[[WorkerLoad], bool], forget: Callable[[WorkerLoad], bool]
    ) -> WorkerLoad | None:
        last = self._scheduler._last
        for ids in self._ids:
            n = len(ids)
            if not n:
                continue
            start = bisect.bisect_left(ids, last)
            chosen = None
            stale = []
            for k in range(n):
                worker = self._workers[ids[(start + k) % n]]
                if usable(worker):
                    chosen = worker
                    break
                if forget(worker):
                    stale.append(worker)
            for worker in stale:
                self.remove(worker)
            if chosen is not None:
                self._scheduler._last = chosen.worker_id
                return chosen
        return None
