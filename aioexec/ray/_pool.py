"""The Ray engine's scheduling state: actors, tasks in flight, queued work, under one lock.

Neighbours: submitting threads (``aioexec.ray._engine``), Ray's completion thread
(``aioexec.ray._calls``) and the manager thread (``aioexec.ray._manager``) read and change
this state, always holding :attr:`ActorPool.lock`, and only for bookkeeping: no Ray call is
ever made under it (a ``.remote()`` or ``ray.kill`` waits for the caller's turn elsewhere).
Nothing here does I/O.

Work waits here, in the driver, until an actor has room: ``child_concurrency`` coroutines
and one plain function at a time per actor, as in a local child. Cancelling queued work is
then instant, and a call that was never sent can never run.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from .._front.engine import EngineFuture, Task, WorkerId, WorkerOptions

__all__ = ["ActorPool", "RayActor", "Send"]


class RayActor:
    """One actor as the driver sees it (a ``WorkerLoad`` for the scheduler)."""

    __slots__ = (
        "dead",
        "handle",
        "node_id",
        "pid",
        "ready",
        "running",
        "sync_running",
        "worker_id",
    )

    def __init__(self, worker_id: WorkerId, handle: Any) -> None:
        self.worker_id = worker_id
        self.handle = handle  # the ray ActorHandle
        self.ready = False  # said hello: the initializer ran, calls may be sent
        self.dead = False  # lost or killed: no call is sent to it any more
        self.running: dict[int, EngineFuture] = {}  # task id -> future, sent and not answered
        self.sync_running = 0  # how many of them are plain functions (0 or 1)
        self.pid: int | None = None  # from hello, for messages
        self.node_id: str | None = None

    @property
    def in_flight(self) -> int:
        return len(self.running)

    def describe(self) -> str:
        if self.pid is None:
            return f"Ray actor {self.worker_id} (not started yet)"
        return f"Ray actor {self.worker_id} (pid {self.pid}, node {self.node_id})"


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
        self.next_worker_id = 0
        self.last_task_id = 0
        self.shutting_down = False  # no new work once the queued work is done
        # -- written under the lock, read without it (a stale read is harmless there) --
        self.broken: str | None = None  # why the engine cannot run work; set once
        self.exited = False  # the manager thread has ended: submissions are refused

    # -- tasks ----------------------------------------------------------------------------

    def reserve(self) -> list[Send]:
        """Give queued tasks free slots, in order; the caller sends them after the lock."""
        sends: list[Send] = []
        for queue, is_async in ((self.queued_async, True), (self.queued_sync, False)):
            while queue:
                if queue[0].future.was_cancelled():
                    queue.popleft()  # cancelled while queued: it never leaves the driver
                    continue
                actor = self._actor_with_room(is_async)
                if actor is None:
                    break
                task = queue.popleft()
                if task.future.start_running():
                    sends.append((actor, self.record_running(actor, task), task))
        return sends

    def record_running(self, actor: RayActor, task: Task) -> int:
        task_id = self.last_task_id = self.last_task_id + 1
        task.future.task_id = task_id
        actor.running[task_id] = task.future
        if not task.is_async:
            actor.sync_running += 1
        self.running_on[task_id] = actor
        return task_id

    def take_running(self, actor: RayActor, task_id: int) -> EngineFuture | None:
        """Forget a task that was answered or lost; its future, or None if it was already
        forgotten (its actor was lost first)."""
        future = actor.running.pop(task_id, None)
        if future is None:
            return None
        del self.running_on[task_id]
        if not future.cancels_remotely:
            actor.sync_running -= 1
        return future

    def take_queued(self) -> list[EngineFuture]:
        futures = [task.future for task in self.queued_async]
        futures += [task.future for task in self.queued_sync]
        self.queued_async.clear()
        self.queued_sync.clear()
        return futures

    def has_queued(self) -> bool:
        return bool(self.queued_async or self.queued_sync)

    def idle(self) -> bool:
        """Nothing queued and nothing in flight."""
        return not (self.running_on or self.has_queued())

    # -- actors ---------------------------------------------------------------------------

    def _actor_with_room(self, is_async: bool) -> RayActor | None:
        limit = self.limit
        if is_async:
            candidates = [
                a
                for a in self.actors.values()
                if a.ready and len(a.running) - a.sync_running < limit
            ]
        else:
            candidates = [a for a in self.actors.values() if a.ready and not a.sync_running]
        if not candidates:
            return None
        return self.options.scheduler.choose(candidates)  # type: ignore[return-value]

    def add_actor(self, handle: Any) -> RayActor:
        actor = RayActor(WorkerId(self.next_worker_id), handle)
        self.next_worker_id += 1
        self.actors[actor.worker_id] = actor
        return actor

    def lose(self, actor: RayActor) -> list[EngineFuture]:
        """``actor`` is gone (lost or killed): forget it; return the futures of its calls."""
        if actor.dead:
            return []
        actor.dead = True
        self.actors.pop(actor.worker_id, None)
        futures = list(actor.running.values())
        for task_id in actor.running:
            del self.running_on[task_id]
        actor.running.clear()
        actor.sync_running = 0
        return futures
