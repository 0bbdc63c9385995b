"""The manager thread: the only owner of the children's pipes and of all scheduling state.

Data flow::

    caller threads                      manager thread (this module)              child k
    submit() -> Manager.submit(item):      (under the manager's lock)
      a child has room, none queued:    ------------------ RUN frame ------------->  runs it
      else post(("submit", item))       -> inbox -> queued_async / queued_sync
               + one wake-up byte          dispatch: scheduler picks a child
                                           with room -> RUN frame ------------->  runs it
    future.cancel() -> post("cancel")   -> CANCEL frame ---------------------->  task.cancel()
                                        <- RESULT / ERROR / CANCELLED frame  <--  one per task
                                           outcomes delivered after the lock
                                           is released (``_completion``)
                                        <- process sentinel: child died: fail its tasks

The scheduling state (queues, children, tasks in flight, the children's output buffers) is
guarded by one lock. A submitting thread that finds a child with room writes the task's frame
itself, so the common case costs no thread hop; everything else (starting children, queued
work, answers, deaths, shutdown) is the manager thread's, except while an event loop holds a
lease (``_lease``): that loop then reads the answers and sends its own queued work. Only the
manager thread touches the selector. The manager sleeps in ``selector.select()`` on: the
wake-up pipe, each child's result pipe that no lease covers, each child's process sentinel,
and a child's task pipe while it is full. Nothing polls and nothing sleeps.

The handlers for a child's answers and death are ``_answers.ChildEvents``, and the lease's
bookkeeping is ``_lease.Leasing``, both mixed in here.

One turn of :meth:`Manager._run`, under the lock: handle ready descriptors, take the inbox,
dispatch queued work, flush pipes; then, without the lock, deliver the turn's outcomes; stop
once shut down with no work and no children left.
"""

from __future__ import annotations

import functools
import logging
import selectors
import threading
import weakref
from asyncio.events import _get_running_loop
from collections import deque
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from ._answers import ChildEvents, fail
from ._child import ChildConfig
from ._completion import Completions
from ._future import AnyTaskFuture
from ._lease import Leasing
from ._pipeio import Wakeup
from ._process import ChildProcess, ChildState
from ._protocol import Chunk, Kind, Payload, encode_frame
from ._scheduler import ChildId, Scheduler

__all__ = ["Manager", "ManagerConfig", "WorkItem"]

_LOGGER = logging.getLogger("aioexec")


@dataclass(frozen=True)
class ManagerConfig:
    ctx: BaseContext
    max_workers: int
    child_concurrency: int
    max_tasks_per_child: int | None
    scheduler: Scheduler
    child: ChildConfig


class WorkItem:
    """A task queued in the parent: its future and its pickled call."""

    __slots__ = ("call", "future", "is_async")

    def __init__(self, future: AnyTaskFuture, call: Payload, is_async: bool) -> None:
        self.future = future
        self.call = call
        self.is_async = is_async


class Manager(ChildEvents, Leasing):
    """Runs the manager thread of one executor."""

    def __init__(self, config: ManagerConfig, name: str) -> None:
        self.config = config
        # -- shared with caller threads --
        self._inbox: deque[tuple[str, Any]] = deque()  # ("submit", WorkItem), ("cancel", fut)
        self._wakeup = Wakeup()
        self.broken: str | None = None  # why the executor cannot run work; set once
        self.children_snapshot: dict[int, BaseProcess] = {}  # pid -> process, replaced whole
        self.executor_ref: weakref.ref[Any] | None = None  # its callback shuts us down
        self._exited = False  # the thread has ended; later posts are rejected at once
        # Guards everything below but the selector, and the ChildProcess objects.
        self._lock = threading.Lock()
        # Counts answered tasks; submit() takes one instead of starting a child
        # (ProcessPoolExecutor's _idle_worker_semaphore).
        self._tasks_ended = 0
        self._turn_completions = Completions()  # outcomes of this turn, delivered after the lock
        self._completions = self._turn_completions  # where outcomes go now (see _lease)
        self._init_leasing()
        # -- manager thread only --
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wakeup.read_fd, selectors.EVENT_READ, self._on_wakeup)
        self._queued_async: deque[WorkItem] = deque()
        self._queued_sync: deque[WorkItem] = deque()
        self._children: dict[ChildId, ChildProcess] = {}
        self._running_on: dict[int, ChildProcess] = {}  # task id -> child running it
        self._next_child_id = 0
        self._next_task_id = 0
        self._shutting_down = False
        self._ever_ready = False  # some child finished start-up (so start-up works at all)
        # (why, error) of the first initializer failure; the break waits for that child's exit
        self._init_failure: tuple[str, BaseException | None] | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- called from any thread -----------------------------------------------------------

    def post(self, op: str, arg: Any = None) -> None:
        self._inbox.append((op, arg))
        self._wakeup.notify()
        if self._exited:
            self._reject_inbox()

    def _notify(self) -> None:
        self._wakeup.notify()

    def cancel_running(self, future: AnyTaskFuture) -> None:
        """The remote-cancel hook of coroutine futures (see ``_future``)."""
        self.post("cancel", future)

    def submit(self, item: WorkItem) -> None:
        """Send the task to a child from this thread if one has room and no task of its kind
        waits ahead of it; else queue it for the manager thread (always, from the manager
        thread itself: it may be unpickling an answer under the lock). A submission from an
        event loop may start or keep that loop's lease on the answers (``_lease``)."""
        if not self.in_reader():
            # Without the lock first: in a burst, the tasks behind a queued one are queued
            # too (see _send_now) and need not wait for the lock the manager thread holds
            # while it dispatches.
            if not self._work_waits(item):
                loop = _get_running_loop()
                with self._lock:
                    self._lease_for(loop)
                    if self._send_now(item):
                        return
            # Queued: the manager thread dispatches it when an answer frees a slot, so it
            # must read the answers.
            self.end_lease()
        self.post("submit", item)

    def take_ended_task(self) -> bool:
        """Consume one "a task ended since" token (see ``_executor``); False if none."""
        with self._lock:
            if self._tasks_ended:
                self._tasks_ended -= 1
                return True
            return False

    def _send_now(self, item: WorkItem) -> bool:
        if self._exited or self.broken is not None or self._shutting_down:
            return False
        if self._work_waits(item):
            return False  # first come, first served
        child = self._child_with_room(item.is_async, may_start=False)
        if child is None:
            return False
        try:
            # A future cancelled meanwhile is dropped: it never runs. A full pipe is left to
            # the manager thread, which waits for room.
            if item.future.start_running() and not child.send_now(self._task_frame(child, item)):
                self._wakeup.notify()
        except BaseException:
            self._abandon(child, item)
            raise
        return True

    def _work_waits(self, item: WorkItem) -> bool:
        """Work of ``item``'s kind, or anything posted, waits for the manager thread."""
        return bool(self._inbox or (self._queued_async if item.is_async else self._queued_sync))

    def _abandon(self, child: ChildProcess, item: WorkItem) -> None:
        """A send from a caller's thread was interrupted: the task counts as running on the
        child, which is stopped, so that it fails with the child's other tasks."""
        if item.future.task_id not in child.running:
            self._record_running(child, item)
        self._stop_cut_stream(child)

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                events = self._selector.select()
                with self._lock:
                    for key, _ in events:
                        key.data()
                    self._take_inbox()
                    self._dispatch()
                    self._sync_registrations()
                    if self._shutting_down:
                        self._retire_idle_children()
                    self._flush()
                    done = self._shutting_down and not self._children and not self._has_queued()
                self._turn_completions.deliver()
                if done:
                    break
        except BaseException as exc:
            _LOGGER.critical("aioexec: the manager thread failed", exc_info=True)
            self._crash(exc)
        finally:
            self._selector.close()
            self._wakeup.close()
            # Break the cycle manager -> weakref -> its callback -> manager, so that a
            # finished manager (and its Thread object) is freed without waiting for the gc.
            self.executor_ref = None
            self._exited = True
            self._reject_inbox()

    def _crash(self, exc: BaseException) -> None:
        """Last resort after a bug in this thread: fail every future, kill every child."""
        with self._lock:
            if self.broken is None:
                self.broken = f"aioexec: the executor is broken: its manager thread failed: {exc!r}"
            futures = [f for c in self._children.values() for f in c.running.values()]
            futures += [item.future for q in (self._queued_async, self._queued_sync) for item in q]
            children = list(self._children.values())
        self.end_lease()
        self._turn_completions.deliver()  # answers taken before the failure
        for future in futures:
            future.start_running()
            fail(future, self._broken_error(exc))
        for child in children:
            child.process.kill()
            child.process.join()
            child.close()

    def _reject_inbox(self) -> None:
        # Submissions that raced the end of this thread fail instead of waiting forever.
        # Another thread may empty the inbox at the same time (post() after the exit).
        while True:
            try:
                op, arg = self._inbox.popleft()
            except IndexError:
                return
            if op == "submit" and arg.future.start_running():
                fail(arg.future, self._broken_error(None))
            elif op == "start_child":
                arg.set()
            elif op == "deliver":  # an event loop's plain callbacks, after this thread ended
                arg.deliver()

    def _has_queued(self) -> bool:
        return bool(self._queued_async or self._queued_sync)

    def _retire_idle_children(self) -> None:
        # Shutting down: a child with nothing to do is told to exit once no work waits.
        if self._has_queued():
            return
        for child in self._children.values():
            if not child.running and child.state is not ChildState.RETIRING:
                self._retire(child)

    def _on_wakeup(self) -> None:
        self._wakeup.drain()

    def _take_inbox(self) -> None:
        inbox = self._inbox
        while inbox:
            op, arg = inbox.popleft()
            if op == "submit":
                (self._queued_async if arg.is_async else self._queued_sync).append(arg)
            elif op == "cancel":
                self._send_cancel(arg)
            elif op == "start_child":  # from submit(), which waits for the event
                if self.broken is None and len(self._children) < self.config.max_workers:
                    self._start_child_or_break()
                arg.set()
            elif op == "deliver":  # from an event loop's lease: plain callbacks and the like
                self._completions.absorb(arg)
            elif op == "shutdown":
                self._shutting_down = True
                self.end_lease()
                if arg:  # cancel_futures: what could start by now starts, the rest is cancelled
                    self._dispatch()
                    self._cancel_queued()
            elif op == "cancel_all":
                self._cancel_queued()
                for child in self._children.values():
                    for future in child.running.values():
                        if future.cancels_remotely:  # a running plain function cannot be
                            self._completions.cancelled(future)
                            self._send_cancel(future)
            elif op == "terminate":  # terminate_workers() / kill_workers()
                for child in self._children.values():
                    # Process.terminate/kill skip a process already reaped (its pid may be
                    # reused by then); os.kill would not.
                    (child.process.kill if arg else child.process.terminate)()

    def _cancel_queued(self) -> None:
        for queue in (self._queued_async, self._queued_sync):
            while queue:
                self._completions.cancelled(queue.popleft().future)

    # -- dispatching ------------------------------------------------------------------------

    def _dispatch(self) -> None:
        if self.broken is not None:
            self._fail_queued()
            return
        for queue, is_async in ((self._queued_async, True), (self._queued_sync, False)):
            while queue:
                if queue[0].future.cancelled():
                    queue.popleft()
                    continue
                child = self._child_with_room(is_async, may_start=True)
                if child is None:
                    break
                item = queue.popleft()
                if item.future.start_running():
                    self._send_task(child, item)

    def _child_with_room(self, is_async: bool, may_start: bool) -> ChildProcess | None:
        """A child that can take the task now, chosen by the scheduler; None if there is none.

        When no child is idle and fewer than ``max_workers`` run, a new child is started
        (``may_start``, manager thread only) or, from a submitting thread, None is returned
        so that the manager thread decides."""
        limit = self.config.child_concurrency
        candidates = []
        idle = False
        for child in self._children.values():
            if child.state is ChildState.RETIRING:
                continue
            sync = child.sync_running
            in_flight = len(child.running)
            if (in_flight - sync < limit) if is_async else (sync == 0):
                candidates.append(child)
                # Idle: its plain-function slot is free, or (coroutines) it runs nothing.
                idle = idle or not is_async or in_flight == 0
        if not idle and len(self._children) < self.config.max_workers:
            if not may_start:
                return None
            started = self._start_child_or_break()
            if started is None:
                return None
            candidates.append(started)
        if not candidates:
            return None
        return self.config.scheduler.choose(candidates)  # type: ignore[return-value]

    def _start_child_or_break(self) -> ChildProcess | None:
        if self._init_failure is not None:
            return None  # the executor breaks once the failed child has exited
        try:
            return self._start_child()
        except Exception as exc:
            self._break(f"a child process could not be started: {exc!r}", exc)
            return None

    def _start_child(self) -> ChildProcess:
        # What a forked child would inherit of ours (see ChildProcess).
        held = [self._wakeup.read_fd] + [fd for c in self._children.values() for fd in c.fds()]
        held += [fd for lease in self._leases for fd in lease.fds()]
        child = ChildProcess(ChildId(self._next_child_id), self.config.ctx, self.config.child, held)
        self._next_child_id += 1
        self._children[child.child_id] = child
        self._watch(child)
        self._selector.register(
            child.sentinel, selectors.EVENT_READ, functools.partial(self._on_exit, child)
        )
        self._publish_children()
        return child

    def _send_task(self, child: ChildProcess, item: WorkItem) -> None:
        child.send(self._task_frame(child, item))

    def _record_running(self, child: ChildProcess, item: WorkItem) -> int:
        """Give the task its id and count it as running on ``child``."""
        task_id = self._next_task_id = self._next_task_id + 1
        item.future.task_id = task_id
        child.running[task_id] = item.future
        if not item.is_async:
            child.sync_running += 1
        self._running_on[task_id] = child
        return task_id

    def _task_frame(self, child: ChildProcess, item: WorkItem) -> list[Chunk]:
        """Record the task as running on ``child``; return its frame."""
        task_id = self._record_running(child, item)
        kind = Kind.RUN_ASYNC if item.is_async else Kind.RUN_SYNC
        call = item.call
        frame = encode_frame(kind, task_id, call.body, call.buffers, call.copied)
        child.tasks_sent += 1
        limit = self.config.max_tasks_per_child
        if limit is not None and child.tasks_sent >= limit:
            # STOP follows the task: queued now, written with it or by the manager.
            child.state = ChildState.RETIRING
            frame = frame + encode_frame(Kind.STOP)
        return frame

    def _send_cancel(self, future: AnyTaskFuture) -> None:
        child = self._running_on.get(future.task_id)
        if child is not None:
            child.send(encode_frame(Kind.CANCEL, future.task_id))

    def _retire(self, child: ChildProcess) -> None:
        child.state = ChildState.RETIRING
        child.send(encode_frame(Kind.STOP))

    def _flush(self) -> None:
        for child in self._children.values():
            if child.out and not child.write_blocked and not child.flush():
                child.write_blocked = True
                self._selector.register(
                    child.write_fd,
                    selectors.EVENT_WRITE,
                    functools.partial(self._on_writable, child),
                )

    def _on_writable(self, child: ChildProcess) -> None:
        if child.child_id in self._children and child.flush():
            child.write_blocked = False
            self._selector.unregister(child.write_fd)

    def _publish_children(self) -> None:
        self.children_snapshot = {c.pid: c.process for c in self._children.values()}
