"""Which child gets the next task: pure bookkeeping, no I/O, testable without processes.

Neighbours: ``_manager`` asks a :class:`Scheduler` to pick among the children that have room
for a task; the manager alone keeps the counts it passes in.

A scheduler only ever sees children with free capacity for the task at hand (the manager
filters them), so its job is fairness: which of several children with room runs the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NewType, Protocol, runtime_checkable

__all__ = [
    "ChildId",
    "ChildLoad",
    "LeastLoaded",
    "RoundRobin",
    "Scheduler",
    "SchedulerSpec",
    "make_scheduler",
]

ChildId = NewType("ChildId", int)


class ChildLoad(Protocol):
    """What a scheduler may know of one child."""

    @property
    def child_id(self) -> ChildId: ...

    @property
    def in_flight(self) -> int:
        """Tasks sent to the child and not yet answered."""
        ...


@runtime_checkable
class Scheduler(Protocol):
    """Chooses a child for a task among candidates that all have room for it."""

    def choose(self, candidates: Sequence[ChildLoad]) -> ChildLoad:
        """Return one element of ``candidates`` (never empty)."""
        ...


class LeastLoaded:
    """The child with the fewest tasks in flight; ties rotate so equal children share work."""

    def __init__(self) -> None:
        self._last: ChildId = ChildId(-1)

    def choose(self, candidates: Sequence[ChildLoad]) -> ChildLoad:
        if len(candidates) == 1:
            chosen = candidates[0]  # the common case on the hot path: nothing to weigh
        else:
            least = min(c.in_flight for c in candidates)
            tied = [c for c in candidates if c.in_flight == least]
            # Among equals, take the first child after the one chosen last time.
            after = [c for c in tied if c.child_id > self._last]
            chosen = min(after or tied, key=lambda c: c.child_id)
        self._last = chosen.child_id
        return chosen


class RoundRobin:
    """Each child in turn, skipping children without room."""

    def __init__(self) -> None:
        self._last: ChildId = ChildId(-1)

    def choose(self, candidates: Sequence[ChildLoad]) -> ChildLoad:
        after = [c for c in candidates if c.child_id > self._last]
        chosen = min(after or candidates, key=lambda c: c.child_id)
        self._last = chosen.child_id
        return chosen


SchedulerSpec = Literal["least-loaded", "round-robin"] | Scheduler


def make_scheduler(spec: SchedulerSpec) -> Scheduler:
    if spec == "least-loaded":
        return LeastLoaded()
    if spec == "round-robin":
        return RoundRobin()
    if isinstance(spec, Scheduler):
        return spec
    raise ValueError(
        f"scheduler must be 'least-loaded', 'round-robin' or an object with a "
        f"choose(candidates) method, not {spec!r}"
    )
