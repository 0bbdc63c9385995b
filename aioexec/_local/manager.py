"""The manager thread: the only owner of the selector, and of every child outside the fast path.

Data flow::

    submitting threads (_local.engine)   manager thread (this module)          child k
      a child has room, none queued:  ---------------- RUN frame ------------>  runs it
      else Mailbox.post(task)         -> queued_async / queued_sync
               + one wake-up byte        dispatch: the scheduler picks a
                                         child with room -> RUN frame ------->  runs it
    future.cancel() -> CancelTask     -> CANCEL frame ----------------------->  task.cancel()
                                      <- RESULT / ERROR / CANCELLED  <--------  one per task
                                         (_local.answers; outcomes are
                                         delivered after the lock)
                                      <- process sentinel: child died: fail its tasks

The scheduling state (``_local.pool``) is guarded by the pool's lock. Only this thread
touches the selector. It sleeps in ``selector.select()`` on: the wake-up pipe, each child's
result pipe that no lease covers (``_local.lease``), each child's process sentinel, and a
child's task pipe while it is full. Nothing polls and nothing sleeps.

One turn of :meth:`Manager.run`, under the pool's lock: handle ready descriptors, act on the
messages (``_HANDLERS``), dispatch queued work, follow the leases, retire idle
children when shutting down, flush pipes; then, without the lock, deliver the turn's
outcomes; stop once shut down with no work and no children left.
"""

from __future__ import annotations

import functools
import logging
import selectors
import threading
from collections.abc import Callable
from typing import Any

from .._deadlines import Deadlines
from .._errors import TaskTimeout
from .._front.engine import EngineFuture, Task, WorkerId
from . import forks
from .answers import Answers, header_check, start_failure_advice
from .lease import LeaseKeeper
from .messages import (
    CancelAll,
    CancelTask,
    Deliver,
    Mailbox,
    Message,
    Shutdown,
    StartChild,
    Terminate,
)
from .pool import LocalOptions, Pool
from .process import ChildProcess, ChildState
from .protocol import Kind, encode_frame

__all__ = ["Manager"]

_LOGGER = logging.getLogger("aioexec")


class Manager:
    """The manager thread of one local engine, and the parts it wires together."""

    def __init__(self, options: LocalOptions, name: str) -> None:
        self.options = options
        self.pool = Pool(options)
        self.mailbox = Mailbox()
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)
        self.answers = Answers(self.pool)
        self.lease = LeaseKeeper(self.pool, self.answers, self.mailbox, self.thread)
        self._deadlines = Deadlines()
        self._selector = selectors.DefaultSelector()
        forks.own(self._selector.fileno())
        self._selector.register(self.mailbox.wakeup.read_fd, selectors.EVENT_READ, self._on_wakeup)

    # -- any thread -------------------------------------------------------------------------

    def post(self, message: Message) -> None:
        self.mailbox.post(message)
        if self.pool.exited:
            self._reject_messages()

    def cancel_running(self, future: EngineFuture) -> None:
        """The remote-cancel hook of coroutine futures (see ``_front.futures``)."""
        self.post(CancelTask(future))

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        pool = self.pool
        try:
            while True:
                events = self._selector.select(self._deadlines.wait_time())
                with pool.lock:
                    for key, _ in events:
                        key.data()
                    self._on_deadlines()
                    self._take_messages()
                    self.dispatch()
                    self._follow_leases()
                    if pool.shutting_down:
                        self._retire_idle_children()
                    self._flush()
                    done = pool.shutting_down and not pool.children and not pool.has_queued()
                pool.turn_completions.deliver()
                if done:
                    break
        except BaseException as exc:
            _LOGGER.critical("aioexec: the manager thread failed", exc_info=True)
            self._crash(exc)
        finally:
            forks.disown(self._selector.fileno())
            self._selector.close()
            self.mailbox.wakeup.close()
            pool.exited = True
            self._reject_messages()

    def _crash(self, exc: BaseException) -> None:
        """Last resort after a bug in this thread: fail every future, kill every child."""
        pool = self.pool
        with pool.lock:
            if pool.broken is None:
                pool.broken = f"aioexec: the executor is broken: its manager thread failed: {exc!r}"
            futures = [f for c in pool.children.values() for f in c.running.values()]
            futures += [task.future for q in pool.queues() for task in q]
            children = list(pool.children.values())
        self.lease.end_lease()
        pool.turn_completions.deliver()  # answers taken before the failure
        for future in futures:
            future.start_running()
            self.answers.fail_one(future, self.answers.broken_error(exc))
        for child in children:
            child.stop_process(kill=True)
            child.process.join()
            child.close()

    def _reject_messages(self) -> None:
        # Messages that raced the end of this thread: submissions fail instead of waiting
        # forever. Another thread may empty the mailbox at the same time (a post after the
        # exit).
        while (message := self.mailbox.take()) is not None:
            if isinstance(message, Task):
                if message.future.start_running():
                    error = RuntimeError("cannot schedule new futures after shutdown")
                    if self.pool.broken is not None:
                        error = self.answers.broken_error(None)
                    self.answers.fail_one(message.future, error)
            elif isinstance(message, StartChild):
                message.started.set()
            elif isinstance(message, Deliver):  # an event loop's plain callbacks
                message.batch.deliver()

    def _on_wakeup(self) -> None:
        self.mailbox.wakeup.drain()

    def _take_messages(self) -> None:
        handlers = _HANDLERS
        while (message := self.mailbox.take()) is not None:
            handlers[type(message)](self, message)

    # -- messages ---------------------------------------------------------------------------

    def _queue_task(self, task: Task) -> None:
        self.pool.queue_for(task).append(task)

    def _cancel_task(self, message: CancelTask) -> None:
        self._send_cancel(message.future)

    def _start_child_now(self, message: StartChild) -> None:
        pool = self.pool
        if pool.broken is None and len(pool.children) < pool.max_workers:
            self._start_child_or_break()
        message.started.set()

    def _absorb(self, message: Deliver) -> None:
        self.pool.completions.absorb(message.batch)

    def _shut_down(self, message: Shutdown) -> None:
        self.pool.shutting_down = True
        if message.cancel_futures:  # what could start by now starts, the rest is cancelled
            self.dispatch()
            self._cancel_queued()

    def _cancel_all(self, message: CancelAll) -> None:
        self._cancel_queued()
        for child in self.pool.children.values():
            for future in child.running.values():
                if future.cancels_remotely:  # a running plain function cannot be
                    self.pool.completions.cancelled(future)
                    self._send_cancel(future)

    def _terminate(self, message: Terminate) -> None:
        self.pool.forced = True
        for child in self.pool.children.values():
            child.end_reason = "terminate_workers()" if not message.kill else "kill_workers()"
            child.stop_process(message.kill)

    def _cancel_queued(self) -> None:
        pool = self.pool
        for queue in pool.queues():
            while queue:
                pool.totals.cancelled += 1
                pool.completions.cancelled(queue.popleft().future)

    # -- dispatching ------------------------------------------------------------------------

    def dispatch(self) -> None:
        pool = self.pool
        if pool.broken is not None:
            self.answers.fail_queued()
            return
        for queue in pool.queues():
            while queue:
                if queue[0].future.was_cancelled():
                    queue.popleft()
                    continue
                child, start = pool.child_with_room(queue[0])
                if start:
                    child = self._start_child_or_break() or child
                if child is None:
                    break
                task = queue.popleft()
                if task.resend or task.future.start_running():
                    child.send(pool.task_frame(child, task), task)
                    options = task.options
                    if options is not None:
                        child.stop_grace = options.grace
                        if options.timeout is not None:
                            self._deadlines.add(options.timeout, task.future.task_id, grace=False)

    def _start_child_or_break(self) -> ChildProcess | None:
        pool = self.pool
        if pool.init_failure is not None:
            return None  # the executor breaks once the failed child has exited
        if pool.forced:
            # terminate_workers()/kill_workers(): a new child would escape the signals.
            if all(c.state is ChildState.RETIRING for c in pool.children.values()):
                self.answers.break_pool(
                    "a child process exited while the executor was being forcefully shut "
                    "down (terminate_workers() or kill_workers()); work still queued will "
                    "not run",
                    None,
                )
            return None
        try:
            child = pool.add_child(self._new_child)
        except Exception as exc:
            advice = "" if pool.ever_ready else " " + start_failure_advice(None)
            self.answers.break_pool(f"a child process could not be started ({exc!r}).{advice}", exc)
            return None
        _LOGGER.info("aioexec: child %d started (pid %d)", child.worker_id, child.pid)
        self._watch(child)
        self._selector.register(
            child.sentinel, selectors.EVENT_READ, functools.partial(self._on_exit, child)
        )
        return child

    def _new_child(self, worker_id: WorkerId) -> ChildProcess:
        options = self.options
        config = options.child._replace(title=f"aioexec worker {worker_id} of {_parent_title()}")
        return ChildProcess(worker_id, options.ctx, config, header_check(self.pool))

    def _send_cancel(self, future: EngineFuture) -> None:
        """Stop a running task: a coroutine is cancelled in its child; a stoppable plain call
        is interrupted, and its child retired (and killed if the call outlives its grace)."""
        task_id = future.task_id
        child = self.pool.running_on.get(task_id)
        if child is None:
            return
        if task_id != child.plain_task_id:
            child.send(encode_frame(Kind.CANCEL, task_id))
        elif child.exclusive and child.state is not ChildState.RETIRING:
            child.interrupt()
            child.state = ChildState.RETIRING
            child.end_reason = "retired after its stoppable call was stopped"
            child.send(encode_frame(Kind.STOP))
            self._deadlines.add(child.stop_grace, task_id, grace=True)

    def _on_deadlines(self) -> None:
        pool = self.pool
        for deadline in self._deadlines.expired():
            child = pool.running_on.get(deadline.task_id)
            if child is None:
                continue  # it ended in time
            future = child.running[deadline.task_id]
            if deadline.grace:
                child.abort("its stoppable call did not stop within its grace period")
                continue
            pool.totals.failed += 1
            pool.timed_out.add(deadline.task_id)  # its coming CANCELLED is counted here
            pool.completions.error(
                future,
                TaskTimeout(
                    f"aioexec: the task ran longer than its timeout of {deadline.seconds} s in "
                    f"child process {child.pid}, and was stopped"
                ),
            )
            self._send_cancel(future)

    def _retire_idle_children(self) -> None:
        # Shutting down: a child with nothing to do is told to exit once no work waits.
        pool = self.pool
        if pool.has_queued():
            return
        for child in pool.children.values():
            if not child.running and child.state is not ChildState.RETIRING:
                child.state = ChildState.RETIRING
                child.send(encode_frame(Kind.STOP))

    def _flush(self) -> None:
        resent = False
        for child in self.pool.children.values():
            if child.out and not child.write_blocked and not child.flush():
                child.write_blocked = True
                self._selector.register(
                    child.write_fd,
                    selectors.EVENT_WRITE,
                    functools.partial(self._on_writable, child),
                )
            if child.undelivered:
                self._resend(child)
                resent = True
        if resent:
            self.dispatch()
            self._flush()

    def _resend(self, child: ChildProcess) -> None:
        """Queue again, first and in order, the tasks that ``child``'s closed pipe never
        took: they cannot have run, so they go to another child (at most once each)."""
        pool = self.pool
        for task in reversed(child.undelivered):
            if task.future.task_id in child.running:
                pool.take_running(child, task.future.task_id)
            task.resend = True
            pool.queue_for(task).appendleft(task)
        child.undelivered.clear()

    def _on_writable(self, child: ChildProcess) -> None:
        if child.worker_id in self.pool.children and child.flush():
            child.write_blocked = False
            self._selector.unregister(child.write_fd)

    # -- children's pipes and deaths --------------------------------------------------------

    def _watch(self, child: ChildProcess) -> None:
        """Have the selector report ``child``'s answers."""
        self._selector.register(
            child.read_fd, selectors.EVENT_READ, functools.partial(self._on_readable, child)
        )
        child.watched = True

    def _unwatch(self, child: ChildProcess) -> None:
        self._selector.unregister(child.read_fd)
        child.watched = False

    def _on_readable(self, child: ChildProcess) -> None:
        if child.worker_id in self.pool.children and not self.answers.read(child):
            # End of file (the child exited; its sentinel finishes the job) or a corrupted
            # stream (the child is being stopped).
            self._unwatch(child)
            child.eof = True

    def _on_exit(self, child: ChildProcess) -> None:
        if child.worker_id not in self.pool.children:
            return
        self._selector.unregister(child.sentinel)
        if child.undelivered:  # before its other tasks fail: these never reached it
            self._resend(child)
        self.answers.on_exit(child)
        for fd in (child.read_fd, child.write_fd):
            try:
                self._selector.unregister(fd)
            except (KeyError, ValueError):
                pass
        self.pool.remove_child(child, lost=not (child.end_reason or child.process.exitcode == 0))
        child.close()

    def _follow_leases(self) -> None:
        """Watch the result pipes that no lease covers; tell ended leases to let go. An
        engine that shuts down or broke has no lease."""
        if self.pool.shutting_down:
            self.lease.end_lease()
        changes = self.lease.take_changes()
        if changes is None:
            return
        leased, ended = changes
        for child in self.pool.children.values():
            watch = child.worker_id not in leased and not child.eof
            if watch != child.watched:
                (self._watch if watch else self._unwatch)(child)
        for old in ended:
            try:
                old.loop.call_soon_threadsafe(old.unwatch_all)
            except Exception:
                pass  # a closed loop: the lease's finalizer closes its descriptors


def _parent_title() -> str:
    import os
    import sys

    return f"{os.path.basename(sys.argv[0] or 'python')} (pid {os.getpid()})"


# What the manager does with each kind of message (unbound: bound methods in a dict of the
# manager's would make a reference cycle, keeping a finished manager and its thread alive).
_HANDLERS: dict[type, Callable[[Manager, Any], None]] = {
    Task: Manager._queue_task,
    CancelTask: Manager._cancel_task,
    StartChild: Manager._start_child_now,
    Deliver: Manager._absorb,
    Shutdown: Manager._shut_down,
    CancelAll: Manager._cancel_all,
    Terminate: Manager._terminate,
}
