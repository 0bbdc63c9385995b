"""The Ray engine's scheduling state: actors, tasks in flight, queued work, under one lock.

Neighbours: submitting threads (``aioexec.ray._engine``), Ray's completion thread
(``aioexec.ray._calls``) and the manager thread (``aioexec.ray._manager``) read and change
this state, always holding :attr:`ActorPool.lock`, and only for bookkeeping: no Ray call is
ever made under it (a ``.remote()`` or ``ray.kill`` waits for the caller's turn elsewhere).
Nothing here does I/O.

Work waits here, in the driver, until an actor has room: ``child_concurrency`` coroutines
and one plain function at a time per actor, as in a local child; a stoppable plain call
(``ex.options(stoppable=True)``, or a plain call with a ``timeout``) needs an actor that runs
nothing else, and the actor takes nothing else while it runs, since stopping it stops the
actor. Cancelling queued work is then instant, and a call that was never sent never runs.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from .._engines import Totals
from .._front.engine import EngineFuture, Stats, Task, WorkerId, WorkerOptions, WorkerStats

__all__ = ["ActorPool", "RayActor", "Send"]


class RayActor:
    """One actor as the driver sees it (a ``WorkerLoad`` for the scheduler)."""

    def __init__(self, worker_id: WorkerId, handle: Any, replaced: str | None) -> None:
        self.worker_id = worker_id
        self.handle = handle  # the ray ActorHandle
        self.ready = False  # said hello: the initializer ran, calls may be sent
        self.dead = False  # lost or killed: no call is sent to it any more
        self.running: dict[int, EngineFuture] = {}  # task id -> future, sent and not answered
        self.plain_task_id = 0  # the plain call it runs (at most one), or 0
        self.exclusive = False  # that call is stoppable: the actor runs nothing else
        self.pid = 0  # from hello, for messages and stats
        self.node_id: str | None = None
        self.tasks_done = 0  # answered, or lost with it
        self.tasks_failed = 0
        self.started_at = time.time()
        self.replaced = replaced  # how the actor it replaced ended

    @property
    def in_flight(self) -> int:
        return len(self.running)

    def describe(self) -> str:
        if not self.pid:
            return f"Ray actor {self.worker_id} (not started yet)"
        return f"Ray actor {self.worker_id} (pid {self.pid}, node {self.node_id})"

    def has_room_for(self, task: Task, limit: int) -> bool:
        if not self.ready or self.exclusive:
            return False
        if task.stoppable:
            return not self.running
        if task.is_async:
            return len(self.running) - (self.plain_task_id != 0) < limit
        return not self.plain_task_id


#: A task given a slot: its actor, its id, the task. Sent by whoever reserved it.
Send = tuple[RayActor, int, Task]


class ActorPool:
    """The state every part of the Ray engine shares. Each field: who may touch it."""

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.limit = options.child_concurrency
        self.lock = threading.Lock()
        # -- under the lock --
        self.actors: dict[WorkerId, RayActor] = {}  # every actor not lost or killed
        self.running_on: dict[int, RayActor] = {}  # task id -> its actor, e.g. {7: <actor 1>}
        self.queued_async: deque[Task] = deque()  # coroutine tasks waiting for room, in order
        self.queued_sync: deque[Task] = deque()  # plain-function tasks waiting for room
        self.queued_alone: deque[Task] = deque()  # stoppable plain calls, for an idle actor
        self.next_worker_id = 0
        self.last_task_id = 0
        self.shutting_down = False  # no new work once the queued work is done
        # Totals, for stats: tasks by outcome, actors by how they ended
        self.totals = Totals()
        self.ended: deque[str] = deque()  # how ended actors ended, for their replacements
        self.timed_out: set[int] = set()  # tasks failed by their timeout, not answered yet
        # -- written under the lock, read without it (a stale read is harmless there) --
        self.broken: str | None = None  # why the engine cannot run work; set once
        self.exited = False  # the manager thread has ended: submissions are refused

    # -- tasks ----------------------------------------------------------------------------

    def queue_for(self, task: Task) -> deque[Task]:
        if task.is_async:
            return self.queued_async
        return self.queued_alone if task.stoppable else self.queued_sync

    def reserve(self) -> list[Send]:
        """Give queued tasks free slots, in order; the caller sends them after the lock."""
        sends: list[Send] = []
        for queue in (self.queued_async, self.queued_sync, self.queued_alone):
            while queue:
                if queue[0].future.was_cancelled():
                    queue.popleft()  # cancelled while queued: it never leaves the driver
                    self.totals.cancelled += 1
                    continue
                actor = self._actor_with_room(queue[0])
                if actor is None:
                    break
                task = queue.popleft()
                if task.future.start_running():
                    sends.append((actor, self.record_running(actor, task), task))
                else:
                    self.totals.cancelled += 1
        return sends

    def record_running(self, actor: RayActor, task: Task) -> int:
        task_id = self.last_task_id = self.last_task_id + 1
        task.future.task_id = task_id
        actor.running[task_id] = task.future
        if not task.is_async:
            actor.plain_task_id = task_id
            actor.exclusive = task.stoppable
        self.running_on[task_id] = actor
        return task_id

    def take_running(self, actor: RayActor, task_id: int) -> EngineFuture | None:
        """Forget a task that was answered or lost; its future, or None if it was already
        forgotten (its actor was lost first)."""
        future = actor.running.pop(task_id, None)
        if future is None:
            return None
        del self.running_on[task_id]
        if task_id == actor.plain_task_id:
            actor.plain_task_id = 0
            actor.exclusive = False
        actor.tasks_done += 1
        return future

    def count(self, actor: RayActor, task_id: int, outcome: str) -> None:
        """Count an answered task's outcome: "done", "failed" or "cancelled"."""
        if task_id in self.timed_out:
            self.timed_out.discard(task_id)  # counted as failed when its timeout struck
        elif outcome == "done":
            self.totals.done += 1
        elif outcome == "cancelled":
            self.totals.cancelled += 1
        else:
            self.totals.failed += 1
            actor.tasks_failed += 1

    def take_queued(self) -> list[EngineFuture]:
        queues = (self.queued_async, self.queued_sync, self.queued_alone)
        futures = [task.future for queue in queues for task in queue]
        for queue in queues:
            queue.clear()
        return futures

    def has_queued(self) -> bool:
        return bool(self.queued_async or self.queued_sync or self.queued_alone)

    def idle(self) -> bool:
        """Nothing queued and nothing in flight."""
        return not (self.running_on or self.has_queued())

    # -- actors ---------------------------------------------------------------------------

    def _actor_with_room(self, task: Task) -> RayActor | None:
        limit = self.limit
        candidates = [a for a in self.actors.values() if a.has_room_for(task, limit)]
        if not candidates:
            return None
        return self.options.scheduler.choose(candidates)  # type: ignore[return-value]

    def add_actor(self, handle: Any) -> RayActor:
        replaced = self.ended.popleft() if self.ended else None
        actor = RayActor(WorkerId(self.next_worker_id), handle, replaced)
        self.next_worker_id += 1
        self.totals.started += 1
        self.actors[actor.worker_id] = actor
        return actor

    def lose(self, actor: RayActor, how: str, lost: bool) -> list[EngineFuture] | None:
        """``actor`` is gone (``how``; ``lost``: unasked, else retired): forget it; return the
        futures of its calls, or None if it was gone already."""
        if actor.dead:
            return None
        actor.dead = True
        self.actors.pop(actor.worker_id, None)
        if lost:
            self.totals.lost += 1
        else:
            self.totals.retired += 1
        if len(self.ended) < self.options.max_workers:
            self.ended.append(how)
        futures = list(actor.running.values())
        for task_id, future in actor.running.items():
            del self.running_on[task_id]
            if task_id in self.timed_out:
                self.timed_out.discard(task_id)  # counted already
            elif future.was_cancelled():
                self.totals.cancelled += 1
            else:
                self.totals.failed += 1
                actor.tasks_failed += 1
        actor.tasks_done += len(futures)
        actor.running.clear()
        actor.plain_task_id = 0
        actor.exclusive = False
        return futures

    def stats(self) -> Stats:
        return self.totals.stats(
            [
                WorkerStats(
                    worker_id=a.worker_id,
                    pid=a.pid,
                    state="ready" if a.ready else "starting",
                    coroutines=len(a.running) - (a.plain_task_id != 0),
                    plain_calls=int(a.plain_task_id != 0),
                    tasks_done=a.tasks_done,
                    tasks_failed=a.tasks_failed,
                    started_at=a.started_at,
                    replaced=a.replaced,
                )
                for a in self.actors.values()
            ],
            queued=len(self.queued_async) + len(self.queued_sync) + len(self.queued_alone),
            tasks_sent=self.last_task_id,
            broken=self.broken,
        )
