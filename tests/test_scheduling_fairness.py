"""Schedulers choose fairly among children with room: bookkeeping stubs (and one executor
with many children)."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import helpers
import pytest

from aioexec import AsyncProcessExecutor, LeastLoaded, RoundRobin, Scheduler
from aioexec._front.engine import WorkerId, WorkerLoad
from aioexec._front.scheduler import make_scheduler


@dataclass
class StubChild:
    worker_id: WorkerId
    in_flight: int = 0


def _children(n: int) -> list[StubChild]:
    return [StubChild(WorkerId(i)) for i in range(n)]


def _choose(scheduler: Scheduler, candidates: Sequence[StubChild]) -> StubChild:
    chosen = scheduler.choose(candidates)
    assert chosen in candidates
    assert isinstance(chosen, StubChild)
    return chosen


def test_least_loaded_picks_the_child_with_fewest_tasks_in_flight() -> None:
    children = _children(3)
    children[0].in_flight, children[1].in_flight, children[2].in_flight = 5, 1, 3
    assert _choose(LeastLoaded(), children).worker_id == 1


def test_least_loaded_keeps_the_child_it_chose_last_among_equally_loaded_children() -> None:
    # Tasks awaited one at a time find every child idle: the warm child takes them all.
    children = _children(3)
    scheduler = LeastLoaded()
    picks = [_choose(scheduler, children).worker_id for _ in range(4)]
    assert picks == [0, 0, 0, 0]
    children[0].in_flight = 1  # busy now: the next ones after it take turns
    assert _choose(scheduler, children).worker_id == 1
    children[1].in_flight = 1
    assert _choose(scheduler, children).worker_id == 2


def test_least_loaded_spreads_a_burst_over_every_child() -> None:
    children = _children(3)
    scheduler = LeastLoaded()
    picks = []
    for _ in range(7):
        chosen = _choose(scheduler, children)
        chosen.in_flight += 1
        picks.append(chosen.worker_id)
    assert picks == [0, 1, 2, 2, 0, 1, 1]


def test_least_loaded_spreads_tasks_evenly_as_loads_grow() -> None:
    children = _children(4)
    scheduler = LeastLoaded()
    for _ in range(40):
        _choose(scheduler, children).in_flight += 1
    assert [c.in_flight for c in children] == [10, 10, 10, 10]


def test_least_loaded_sends_work_to_the_child_that_finished_its_tasks() -> None:
    children = _children(3)
    scheduler = LeastLoaded()
    for _ in range(9):
        _choose(scheduler, children).in_flight += 1
    children[2].in_flight = 0  # child 2 answered everything
    assert _choose(scheduler, children).worker_id == 2


def test_least_loaded_rotation_wraps_when_the_last_child_is_not_a_candidate() -> None:
    children = _children(3)
    scheduler = LeastLoaded()
    assert _choose(scheduler, children[2:]).worker_id == 2
    assert _choose(scheduler, children[:2]).worker_id == 0


def test_round_robin_takes_each_child_in_turn_whatever_its_load() -> None:
    children = _children(3)
    children[0].in_flight = 100
    scheduler = RoundRobin()
    picks = [_choose(scheduler, children).worker_id for _ in range(7)]
    assert picks == [0, 1, 2, 0, 1, 2, 0]


def test_round_robin_skips_children_without_room() -> None:
    children = _children(4)
    scheduler = RoundRobin()
    assert _choose(scheduler, children).worker_id == 0
    # Child 1 is full (not a candidate): the turn passes to 2, then 3, then back to 0.
    without_1 = [children[0], children[2], children[3]]
    picks = [_choose(scheduler, without_1).worker_id for _ in range(4)]
    assert picks == [2, 3, 0, 2]


def test_round_robin_is_fair_over_many_choices() -> None:
    children = _children(5)
    scheduler = RoundRobin()
    counts = Counter(_choose(scheduler, children).worker_id for _ in range(500))
    assert counts == dict.fromkeys(range(5), 100)


def test_a_single_candidate_is_always_chosen() -> None:
    only = _children(1)
    for scheduler in (LeastLoaded(), RoundRobin()):
        for _ in range(3):
            assert _choose(scheduler, only) is only[0]


def test_scheduler_names_and_instances_are_accepted() -> None:
    assert isinstance(make_scheduler("least-loaded"), LeastLoaded)
    assert isinstance(make_scheduler("round-robin"), RoundRobin)

    class First:
        def choose(self, candidates: Sequence[WorkerLoad]) -> WorkerLoad:
            return candidates[0]

    custom = First()
    assert make_scheduler(custom) is custom
    with pytest.raises(ValueError, match="scheduler"):
        make_scheduler("fastest")  # type: ignore[arg-type]


def test_load_index_picks_what_least_loaded_chooses() -> None:
    """The engine's index (many workers, no scan) and ``choose`` (the candidates) agree, for
    any loads, any last choice, and workers that are not usable or retire."""
    import random

    from aioexec._front.scheduler import LeastLoaded, LoadIndex

    rng = random.Random(11)
    for _ in range(300):
        workers = [StubChild(WorkerId(i)) for i in range(rng.randint(1, 40))]
        for w in workers:
            w.in_flight = rng.randint(0, 5)
        by_choose, by_index = LeastLoaded(), LeastLoaded()
        index = LoadIndex(by_index)
        for w in workers:
            index.add(w)
        retired: set[int] = set()
        for _ in range(20):
            usable = [w for w in workers if w.worker_id not in retired and w.in_flight < 5]
            picked = index.pick(
                lambda w, gone=retired: w.worker_id not in gone and w.in_flight < 5,  # type: ignore[misc]
                lambda w, gone=retired: w.worker_id in gone,  # type: ignore[misc]
            )
            if not usable:
                assert picked is None
                break
            chosen = by_choose.choose(usable)
            assert picked is chosen
            old = chosen.in_flight
            chosen.in_flight = rng.choice([old + 1, max(0, old - 1)])
            index.moved(chosen, old)
            if rng.random() < 0.1:
                retired.add(rng.choice(workers).worker_id)


def test_many_children_spread_a_burst_through_the_load_index(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    """Above INDEX_MIN_WORKERS children the engine chooses from its load index: a burst
    still spreads over every child, and a child that dies leaves the index with it."""
    from aioexec._local.pool import INDEX_MIN_WORKERS

    workers = INDEX_MIN_WORKERS + 2
    ex = make_executor(workers, child_concurrency=2)
    futures = [ex.submit(helpers.async_sleep, 0.3, i) for i in range(2 * workers)]
    helpers.wait_until(lambda: sum(w.coroutines for w in ex.stats().workers) == 2 * workers, 30)
    assert {w.coroutines for w in ex.stats().workers} == {2}  # every child got two
    assert [f.result(30) for f in futures] == list(range(2 * workers))
    victim = next(iter(ex._processes))
    os.kill(victim, signal.SIGKILL)
    helpers.wait_until(lambda: victim not in ex._processes, 30)
    assert sorted(ex.map(helpers.double, range(50))) == [2 * i for i in range(50)]
