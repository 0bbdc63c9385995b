"""The local engine's scheduling state: children, tasks in flight, queued work, under one lock.

Neighbours: ``_local.engine`` (submitting threads, the fast path), ``_local.manager`` (the
manager thread), ``_local.answers`` (answers and deaths) and ``_local.lease`` (an event loop
reading its own answers) all read and change this state, always holding :attr:`Pool.lock`,
except where a field's comment says otherwise. Nothing here does I/O or knows of threads
beyond that lock.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from .._engines import Totals
from .._front.engine import (
    EngineFuture,
    OutcomeBatch,
    Stats,
    Task,
    WorkerId,
    WorkerOptions,
    WorkerStats,
)
from .._front.scheduler import LeastLoaded, LoadIndex
from .child import ChildConfig
from .process import ChildProcess, ChildState
from .protocol import Chunk, Kind, encode_frame

__all__ = ["INDEX_MIN_WORKERS", "LocalOptions", "Pool"]

#: With more children than this, LeastLoaded chooses from a load index, not a scan.
INDEX_MIN_WORKERS = 8


@dataclass(frozen=True)
class LocalOptions:
    """What the local engine needs beyond the options every engine shares."""

    workers: WorkerOptions
    ctx: BaseContext
    child: ChildConfig


class Pool:
    """The state every part of the local engine shares. Each field: who may touch it."""

    def __init__(self, options: LocalOptions) -> None:
        self.options = options
        self.max_workers = options.workers.max_workers
        self.limit = options.workers.child_concurrency  # coroutines at once per child
        self.lock = threading.Lock()
        # -- under the lock --
        self.children: dict[WorkerId, ChildProcess] = {}  # every child not yet reaped
        self.running_on: dict[int, ChildProcess] = {}  # task id -> its child, e.g. {7: <child 1>}
        self.queued_async: deque[Task] = deque()  # coroutine tasks waiting for room, in order
        self.queued_sync: deque[Task] = deque()  # plain-function tasks waiting for room
        self.queued_alone: deque[Task] = deque()  # stoppable plain calls, waiting for an idle child
        self.next_worker_id = 0
        self.last_task_id = 0  # the highest task id sent so far (answers may name no other)
        # Answered tasks since the last submission (ProcessPoolExecutor's
        # _idle_worker_semaphore): a submission takes one instead of starting a child.
        self.tasks_ended = 0
        self.shutting_down = False  # no new work; children retire once idle
        self.forced = False  # terminate_workers()/kill_workers(): no child starts any more
        self.ever_ready = False  # some child finished start-up (so start-up works at all)
        # (why, error) of the first failed start-up; the break waits for that child's exit
        self.init_failure: tuple[str, BaseException | None] | None = None
        # Totals, for stats: tasks answered by outcome, children by how they ended
        self.totals = Totals()
        self.ended: deque[str] = deque()  # how ended children ended, for their replacements
        self.timed_out: set[int] = set()  # tasks failed by their timeout, not answered yet
        scheduler = options.workers.scheduler
        # LeastLoaded's choice for a coroutine task without a scan of every child, where there
        # are enough children for a scan to cost more than keeping the index (None for other
        # schedulers, which see the candidates).
        self.index = (
            LoadIndex(scheduler)
            if type(scheduler) is LeastLoaded and self.max_workers > INDEX_MIN_WORKERS
            else None
        )
        self._usable = functools.partial(_has_coroutine_room, self.limit)
        self.completions: OutcomeBatch = options.workers.new_batch()  # where outcomes go now
        self.turn_completions = self.completions  # the manager turn's own batch
        # -- written under the lock, read without it (a stale read is harmless where read) --
        self.broken: str | None = None  # why the engine cannot run work; set once
        self.exited = False  # the manager thread has ended; later posts are rejected
        # pid -> process of the live children, replaced whole (never mutated), for readers
        # without the lock: ``_processes``, stats.
        self.children_snapshot: dict[int, BaseProcess] = {}

    # -- tasks ----------------------------------------------------------------------------

    def record_running(self, child: ChildProcess, task: Task) -> int:
        """Give the task its id and count it as running on ``child``."""
        task_id = self.last_task_id = self.last_task_id + 1
        task.future.task_id = task_id
        child.running[task_id] = task.future
        if self.index is not None:
            self.index.moved(child, len(child.running) - 1)
        if not task.is_async:
            child.sync_running += 1
            child.plain_task_id = task_id
            child.exclusive = task.stoppable
        self.running_on[task_id] = child
        return task_id

    def task_frame(self, child: ChildProcess, task: Task) -> list[Chunk]:
        """Record the task as running on ``child``; return its frame (followed by STOP when
        the child reaches ``max_tasks_per_child`` with it)."""
        task_id = self.record_running(child, task)
        call = task.call
        kind = Kind.RUN_ASYNC if task.is_async else Kind.RUN_SYNC
        if child.exclusive:
            kind = Kind.RUN_ALONE
        frame = encode_frame(
            kind,
            task_id,
            call.body,
            call.buffers,
            call.copied,
        )
        child.tasks_sent += 1
        limit = self.options.workers.max_tasks_per_child
        if limit is not None and child.tasks_sent >= limit:
            # STOP follows the task: queued now, written with it or by the manager.
            child.state = ChildState.RETIRING
            child.end_reason = f"retired after max_tasks_per_child={limit} tasks"
            frame = frame + encode_frame(Kind.STOP)
        return frame

    def take_running(self, child: ChildProcess, task_id: int) -> EngineFuture:
        """Forget a task that was answered or lost; return its future."""
        future = child.running.pop(task_id)
        del self.running_on[task_id]
        if self.index is not None:
            self.index.moved(child, len(child.running) + 1)
        if task_id == child.plain_task_id:
            child.sync_running -= 1
            child.plain_task_id = 0
            child.exclusive = False
        return future

    def note_answered(self) -> None:
        if self.tasks_ended < self.max_workers:  # never more idle children than that
            self.tasks_ended += 1

    def take_ended_task(self) -> bool:
        """Consume one "a task ended since" token; False if none."""
        if self.tasks_ended:
            self.tasks_ended -= 1
            return True
        return False

    def has_queued(self) -> bool:
        return bool(self.queued_async or self.queued_sync or self.queued_alone)

    def queue_for(self, task: Task) -> deque[Task]:
        if task.is_async:
            return self.queued_async
        return self.queued_alone if task.stoppable else self.queued_sync

    def queues(self) -> tuple[deque[Task], ...]:
        return self.queued_async, self.queued_sync, self.queued_alone

    # -- children -------------------------------------------------------------------------

    def child_with_room(self, task: Task) -> tuple[ChildProcess | None, bool]:
        """A child that can take the task now, chosen by the scheduler (or None), and whether
        a new child should be started: no child is idle and fewer than ``max_workers`` run.
        A stoppable plain call needs a child that runs nothing else."""
        is_async = task.is_async
        alone = task.stoppable
        if self.index is not None and is_async:
            chosen = self.index.pick(self._usable, _retiring)
            idle = chosen is not None and not chosen.in_flight
            return chosen, not idle and len(self.children) < self.max_workers  # type: ignore[return-value]
        limit = self.limit
        candidates = []
        idle = False
        for child in self.children.values():
            if child.state is ChildState.RETIRING or child.exclusive:
                continue
            sync = child.sync_running
            in_flight = len(child.running)
            if alone:
                room = in_flight == 0
            else:
                room = (in_flight - sync < limit) if is_async else (sync == 0)
            if room:
                candidates.append(child)
                # Idle: its plain-function slot is free, or (coroutines) it runs nothing.
                idle = idle or not is_async or in_flight == 0
        start = not idle and len(self.children) < self.max_workers
        if not candidates:
            return None, start
        chosen = self.options.workers.scheduler.choose(candidates)
        return chosen, start  # type: ignore[return-value]

    def add_child(self, start: Callable[[WorkerId], ChildProcess]) -> ChildProcess:
        child = start(WorkerId(self.next_worker_id))
        self.next_worker_id += 1
        self.totals.started += 1
        if self.ended:
            child.replaced = self.ended.popleft()
        self.children[child.worker_id] = child
        if self.index is not None:
            self.index.add(child)
        self.publish_children()
        return child

    def remove_child(self, child: ChildProcess, lost: bool) -> None:
        """Forget a child that exited; ``lost``: it ended unasked."""
        del self.children[child.worker_id]
        if self.index is not None:
            self.index.remove(child)
        if lost:
            self.totals.lost += 1
        else:
            self.totals.retired += 1
        if len(self.ended) < self.max_workers:
            self.ended.append(child.exit_description)
        self.publish_children()

    def stats(self) -> Stats:
        return self.totals.stats(
            [
                WorkerStats(
                    worker_id=c.worker_id,
                    pid=c.pid,
                    state=c.state.value,
                    coroutines=len(c.running) - c.sync_running,
                    plain_calls=c.sync_running,
                    tasks_done=c.tasks_done,
                    tasks_failed=c.tasks_failed,
                    started_at=c.started_at,
                    replaced=c.replaced,
                )
                for c in self.children.values()
            ],
            queued=sum(map(len, self.queues())),
            tasks_sent=self.last_task_id,
            broken=self.broken,
        )

    def publish_children(self) -> None:
        self.children_snapshot = {c.pid: c.process for c in self.children.values()}

    def idle(self) -> bool:
        """Nothing in flight or queued, children alive, and taking work."""
        return not (
            self.shutting_down
            or self.broken is not None
            or self.exited
            or self.running_on
            or self.has_queued()
            or not self.children
        )


def _has_coroutine_room(limit: int, child: Any) -> bool:
    """``child`` can take one more coroutine task now."""
    return (
        child.state is not ChildState.RETIRING
        and not child.exclusive
        and len(child.running) - child.sync_running < limit
    )


def _retiring(child: Any) -> bool:
    return child.state is ChildState.RETIRING
