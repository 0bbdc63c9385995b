"""What the manager does with its children's answers and deaths, and when it breaks.

Neighbours: :class:`ChildEvents` is mixed into ``_manager.Manager`` (it shares its state and
runs under its lock, in the manager thread or, for answers, in the event loop that holds a
lease: ``_lease``); the outcomes go to ``_completion``; exceptions are rebuilt by
``_errors``.

Every task sent to a child ends here exactly once: with the child's RESULT, ERROR,
CANCELLED or UNDELIVERABLE frame, with ``BrokenWorkerError`` when the child's process
sentinel says it died first (answers it wrote just before dying are read before that), or
with ``BrokenPoolError`` when the executor breaks.
"""

from __future__ import annotations

import functools
import pickle
import selectors
from collections import deque
from typing import TYPE_CHECKING, Any

from ._completion import Completions
from ._errors import (
    BrokenPoolError,
    BrokenWorkerError,
    DeliveryError,
    describe_exit,
    load_exception,
)
from ._future import AnyTaskFuture
from ._process import ChildProcess, ChildState
from ._protocol import Frame, Kind
from ._scheduler import ChildId

if TYPE_CHECKING:
    from ._manager import ManagerConfig

__all__ = ["ChildEvents", "fail", "outcome", "undeliverable"]


class ChildEvents:
    """The manager's handlers for a child's result pipe and process sentinel."""

    if TYPE_CHECKING:  # the Manager's state these handlers share
        broken: str | None
        _children: dict[ChildId, ChildProcess]
        _selector: selectors.BaseSelector
        _running_on: dict[int, ChildProcess]
        _completions: Completions
        _tasks_ended: int
        config: ManagerConfig
        _ever_ready: bool
        _init_failure: tuple[str, BaseException | None] | None
        _shutting_down: bool
        _queued_async: deque[Any]
        _queued_sync: deque[Any]

        def _publish_children(self) -> None: ...
        def end_lease(self) -> None: ...

    def _watch(self, child: ChildProcess) -> None:
        """Have the manager's selector report ``child``'s answers."""
        self._selector.register(
            child.read_fd, selectors.EVENT_READ, functools.partial(self._on_readable, child)
        )

    def _on_readable(self, child: ChildProcess) -> None:
        if child.child_id in self._children and not child.read(
            functools.partial(self._on_frame, child)
        ):
            # End of file: the child exited; its sentinel finishes the job.
            self._selector.unregister(child.read_fd)
            child.watched = False
            child.eof = True

    def _on_frame(self, child: ChildProcess, frame: Frame) -> None:
        kind = frame.kind
        if kind is Kind.READY:
            self._ever_ready = True
            if child.state is ChildState.STARTING:
                child.state = ChildState.READY
            return
        if kind is Kind.INIT_FAILED:
            # The executor breaks when this child has exited, not now: its log record of the
            # failure may still be on its way through a queue that the child flushes at exit
            # (ProcessPoolExecutor, too, breaks only once the worker is gone). No child starts
            # meanwhile.
            child.state = ChildState.RETIRING
            child.init_failed = True
            if self._init_failure is None:
                exc = outcome(frame, child.pid)[1]
                self._init_failure = (
                    f"the initializer failed in child process {child.pid}: {exc!r}",
                    exc,
                )
            return
        future = child.running.get(frame.task_id)
        if future is None:
            return  # already failed: the executor broke while the child was answering
        if kind is Kind.CANCELLED:  # the coroutine ended by cancellation
            self._completions.cancelled(future)
        else:
            value, error = outcome(frame, child.pid)
            if kind is Kind.UNDELIVERABLE:
                assert error is not None
                error = undeliverable(
                    error,
                    f"child process {child.pid} could not unpickle this task's function or "
                    "arguments",
                )
            # Dropped when the user cancelled the future meanwhile.
            if error is None:
                self._completions.result(future, value)
            else:
                self._completions.error(future, error)
        # Forgotten only once its outcome is recorded: a reader interrupted before that
        # (see _lease) leaves it in flight, to fail with its child.
        self._take_running(child, frame.task_id)
        if self._tasks_ended < self.config.max_workers:  # never more idle children than that
            self._tasks_ended += 1

    def _on_exit(self, child: ChildProcess) -> None:
        # Answers written just before the exit are still in the pipe: take them first.
        if child.child_id not in self._children:
            return
        self._selector.unregister(child.sentinel)
        child.read(functools.partial(self._on_frame, child), max_reads=None)
        child.process.join()
        if child.init_failed and self._init_failure is not None:
            self._break(*self._init_failure)
        how = describe_exit(child.process.exitcode)
        started = child.state is not ChildState.STARTING
        if not started and not self._ever_ready and self.broken is None:
            self._break(
                f"child process {child.pid} {how} before it finished starting. If your main "
                "module starts the executor at import time, move that code under "
                "`if __name__ == '__main__':` (the child re-imports the main module); also "
                "check that the initializer and its arguments can be pickled and imported.",
                None,
            )
        when = "while running this task" if started else "during start-up, before this task ran"
        for task_id in list(child.running):
            error = BrokenWorkerError(
                f"aioexec: child process {child.pid} {how} {when}; the executor goes on with "
                "a new child."
            )
            self._completions.error(self._take_running(child, task_id), error)
        self._forget(child)

    def _break(self, why: str, cause: BaseException | None) -> None:
        """The executor cannot run work: fail everything and stop the children."""
        if self.broken is not None:
            return
        self.broken = f"aioexec: the executor is broken: {why}"
        self._shutting_down = True
        self.end_lease()
        self._fail_queued()
        for child in self._children.values():
            for task_id in list(child.running):
                self._completions.error(
                    self._take_running(child, task_id), self._broken_error(cause)
                )
            # A child still starting is left to finish (an initializer that failed there
            # too must get to log it) and then stops on the STOP it is sent; a child that
            # runs work is stopped now, since its tasks were failed.
            if child.state is not ChildState.STARTING and child.process.exitcode is None:
                child.process.terminate()

    def _broken_error(self, cause: BaseException | None) -> BrokenPoolError:
        error = BrokenPoolError(self.broken)
        error.__cause__ = cause
        return error

    def _fail_queued(self) -> None:
        for queue in (self._queued_async, self._queued_sync):
            while queue:
                future = queue.popleft().future
                if future.start_running():
                    self._completions.error(future, self._broken_error(None))

    def _stop_cut_stream(self, child: ChildProcess) -> None:
        """A read or write of ``child``'s pipe was interrupted (a KeyboardInterrupt lands in
        the main thread between any two bytecodes): the stream may hold part of a frame, so
        the child is stopped, and its tasks fail with BrokenWorkerError once its sentinel
        fires."""
        child.state = ChildState.RETIRING
        child.process.terminate()

    def _take_running(self, child: ChildProcess, task_id: int) -> AnyTaskFuture:
        """Forget a task that was answered or lost; return its future."""
        future = child.running.pop(task_id)
        del self._running_on[task_id]
        if not future.cancels_remotely:
            child.sync_running -= 1
        return future

    def _forget(self, child: ChildProcess) -> None:
        for fd in (child.read_fd, child.sentinel, child.write_fd):
            try:
                self._selector.unregister(fd)
            except (KeyError, ValueError):
                pass
        del self._children[child.child_id]
        child.close()
        self._publish_children()


def fail(future: AnyTaskFuture, error: BaseException) -> None:
    """Fail one task outside a manager turn (its thread failed or has ended)."""
    completions = Completions()
    completions.error(future, error)
    completions.deliver()


def outcome(frame: Frame, pid: int) -> tuple[Any, BaseException | None]:
    """Unpickle a RESULT or an exception payload; a failure to unpickle becomes the error."""
    try:
        if frame.kind is Kind.RESULT:
            return pickle.loads(frame.body, buffers=frame.buffers), None
        return None, load_exception(frame.body)
    except BaseException as exc:
        what = "the result" if frame.kind is Kind.RESULT else "the exception"
        return None, undeliverable(
            exc,
            f"{what} of this task, sent by child process {pid}, could not be unpickled in the "
            "parent; the classes of returned objects and exceptions must be importable and "
            "picklable in this process too",
        )


def undeliverable(cause: BaseException, what: str) -> DeliveryError:
    error = DeliveryError(
        f"aioexec: {what} ({type(cause).__name__}: {cause}). Only this task failed."
    )
    # Its traceback runs through this thread's frames, which hold the manager: dropped, so
    # that a caller keeping the error does not keep the manager (and its thread) alive.
    cause.__traceback__ = None
    error.__cause__ = cause
    return error
