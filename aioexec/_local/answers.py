"""What the local engine does with its children's answers and deaths, and when it breaks.

Neighbours: ``_local.manager`` (the manager thread) and ``_local.lease`` (an event loop that
reads its own answers) hand each decoded frame to :meth:`Answers.on_frame`, under the pool's
lock; the manager hands a dead child to :meth:`Answers.on_exit`. Outcomes go into the pool's
current batch (``_front.completion``); exceptions are rebuilt by ``_errors``.

Every task sent to a child ends here exactly once: with the child's RESULT, ERROR,
CANCELLED or UNDELIVERABLE frame, with ``BrokenWorkerError`` when the child's process
sentinel says it died first (answers it wrote just before dying are read before that), or
with ``BrokenPoolError`` when the executor breaks.

A child whose stream cannot be trusted (a frame header that fails its checksum, names a task
never sent, or announces an impossible size: something other than aioexec wrote to its pipe)
is stopped at once and its tasks fail with ``BrokenWorkerError``, which says so; the other
children and the executor go on, whichever thread was reading.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from collections.abc import Callable
from typing import Any

from .._errors import (
    BrokenPoolError,
    BrokenWorkerError,
    RemoteTraceback,
    describe_exit,
    load_exception,
    undeliverable,
)
from .._front.engine import EngineFuture
from .pool import Pool
from .process import ChildProcess, ChildState
from .protocol import Frame, Kind, ProtocolError

__all__ = ["Answers", "header_check", "outcome"]

_LOGGER = logging.getLogger("aioexec")
_ANSWERS = frozenset((Kind.RESULT, Kind.ERROR, Kind.CANCELLED, Kind.UNDELIVERABLE))
_FROM_CHILD = _ANSWERS | {Kind.READY, Kind.INIT_FAILED}


def header_check(pool: Pool) -> Callable[[Kind, int, int], None]:
    """How a child's decoder vets a header before waiting for its body: a child sends only
    answers for tasks it was sent, and start-up news."""

    def check(kind: Kind, task_id: int, size: int) -> None:
        if kind not in _FROM_CHILD:
            raise ProtocolError(f"a child sent a {kind.name} frame, which only the parent sends")
        if kind in _ANSWERS and not 0 < task_id <= pool.last_task_id:
            raise ProtocolError(
                f"a child answered task {task_id}, which was never sent (the last one sent "
                f"is {pool.last_task_id})"
            )

    return check


class Answers:
    """Turns frames and deaths into outcomes. Used under the pool's lock."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def read(self, child: ChildProcess, max_reads: int | None = 8) -> bool:
        """Read ``child``'s answers (see ``ChildProcess.read``); False when it will send no
        more (end of file, or a corrupted stream, for which the child is stopped)."""
        try:
            return child.read(lambda frame: self.on_frame(child, frame), max_reads)
        except ProtocolError as exc:
            self.stop_corrupted(child, exc)
            return False

    def stop_corrupted(self, child: ChildProcess, exc: ProtocolError) -> None:
        _LOGGER.error("aioexec: child process %d sent a corrupted frame: %s", child.pid, exc)
        child.abort(f"it wrote a corrupted frame to its pipe ({exc})")
        child.eof = True  # nothing more is read from this stream

    def on_frame(self, child: ChildProcess, frame: Frame) -> None:
        pool = self._pool
        kind = frame.kind
        if kind is Kind.READY:
            pool.ever_ready = True
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
            if pool.init_failure is None:
                exc = outcome(frame, child.pid)[1]
                what = "the loop_factory" if frame.task_id == 1 else "the initializer"
                pool.init_failure = (f"{what} failed in child process {child.pid}: {exc!r}", exc)
            return
        future = child.running.get(frame.task_id)
        if future is None:
            return  # already failed: the executor broke while the child was answering
        completions = pool.completions
        if kind is Kind.CANCELLED:  # the coroutine ended by cancellation
            if frame.task_id in pool.timed_out:
                pool.timed_out.discard(frame.task_id)  # counted as failed already
            else:
                pool.totals.cancelled += 1
            completions.cancelled(future)
        else:
            value, error = outcome(frame, child.pid)
            if kind is Kind.UNDELIVERABLE:
                assert error is not None
                error = undeliverable(
                    error,
                    f"child process {child.pid} could not unpickle this task's function or "
                    "arguments",
                )
            if error is None:
                pool.totals.done += 1
                completions.result(future, value)
            else:
                pool.totals.failed += 1
                child.tasks_failed += 1
                completions.error(future, error)
        # Forgotten only once its outcome is recorded: a reader interrupted before that
        # (see _local.lease) leaves it in flight, to fail with its child.
        pool.take_running(child, frame.task_id)
        child.tasks_done += 1
        pool.note_answered()

    def on_exit(self, child: ChildProcess) -> None:
        """``child``'s process ended: take its last answers, fail what it still ran."""
        pool = self._pool
        if not child.eof:  # answers written just before the exit are still in the pipe
            self.read(child, max_reads=None)
        child.process.join()
        how = describe_exit(child.process.exitcode)
        self._log_exit(child, how)
        if child.init_failed and pool.init_failure is not None:
            self.break_pool(*pool.init_failure)
        started = child.state is not ChildState.STARTING
        asked = bool(child.end_reason)  # the executor stopped it: not a start-up failure
        if not started and not asked and not pool.ever_ready and pool.broken is None:
            self.break_pool(
                f"child process {child.pid} {how} before it finished starting. "
                + start_failure_advice(child.process.exitcode),
                None,
            )
        when = "while running this task" if started else "during start-up, before this task ran"
        why = f" (the executor stopped it: {child.end_reason})" if child.end_reason else ""
        for task_id in list(child.running):
            error = BrokenWorkerError(
                f"aioexec: child process {child.pid} {how} {when}{why}; the executor goes on "
                "with a new child."
            )
            # Which process ended, in the cause, as ProcessPoolExecutor says it (3.15).
            ended = (
                f"Process {child.pid} terminated abruptly with exit code {child.process.exitcode}"
            )
            error.__cause__ = RemoteTraceback(f"\n'''\n{ended}'''")  # type: ignore[arg-type]
            child.tasks_failed += 1
            pool.totals.failed += 1
            pool.completions.error(pool.take_running(child, task_id), error)

    def _log_exit(self, child: ChildProcess, how: str) -> None:
        reason = child.end_reason or ("retired" if child.state is ChildState.RETIRING else "")
        level = logging.INFO if child.process.exitcode == 0 or child.end_reason else logging.WARNING
        _LOGGER.log(
            level,
            "aioexec: child %d (pid %d) %s%s; %d tasks done, %d failed",
            child.worker_id,
            child.pid,
            how,
            f" ({reason})" if reason else "",
            child.tasks_done,
            child.tasks_failed,
        )
        child.exit_description = f"{how}{f' ({reason})' if reason else ''}"

    def break_pool(self, why: str, cause: BaseException | None) -> None:
        """The executor cannot run work: fail everything and stop the children."""
        pool = self._pool
        if pool.broken is not None:
            return
        pool.broken = f"aioexec: the executor is broken: {why}"
        _LOGGER.error("%s", pool.broken)
        pool.shutting_down = True  # which also ends a lease (``Manager._follow_leases``)
        self.fail_queued()
        for child in pool.children.values():
            for task_id in list(child.running):
                pool.totals.failed += 1
                pool.completions.error(pool.take_running(child, task_id), self.broken_error(cause))
            # A child still starting is left to finish (an initializer that failed there
            # too must get to log it) and then stops on the STOP it is sent; a child that
            # runs work is stopped now, since its tasks were failed.
            if child.state is not ChildState.STARTING and child.process.exitcode is None:
                child.end_reason = "the executor broke"
                child.stop_process(kill=False)

    def broken_error(self, cause: BaseException | None) -> BrokenPoolError:
        error = BrokenPoolError(self._pool.broken)
        error.__cause__ = cause
        return error

    def fail_queued(self) -> None:
        pool = self._pool
        for queue in pool.queues():
            while queue:
                future = queue.popleft().future
                if future.start_running():
                    pool.totals.failed += 1
                    pool.completions.error(future, self.broken_error(None))

    def fail_one(self, future: EngineFuture, error: BaseException) -> None:
        """Fail one task outside a manager turn (its thread failed or has ended)."""
        completions = self._pool.options.workers.new_batch()
        completions.error(future, error)
        completions.deliver()


def start_failure_advice(exitcode: int | None) -> str:
    """What to do when the first child could not start (it exited with ``exitcode``)."""
    if exitcode is not None and exitcode < 0:
        return (
            "A signal ended it while it started (a Ctrl-C in a terminal reaches every "
            "process of the group); submit again with a new executor."
        )
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file is not None and not os.path.isfile(main_file):
        return (
            f"The main module is {main_file!r}, not a file: a child started with 'spawn' or "
            "'forkserver' re-imports the main module, and cannot re-import this one (a "
            "script read from standard input?). Run the script from a file, or create the "
            "executor with mp_context='fork'."
        )
    return (
        "If your main module starts the executor at import time, move that code under "
        "`if __name__ == '__main__':` (the child re-imports the main module); also check "
        "that the initializer and its arguments can be pickled and imported."
    )


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
