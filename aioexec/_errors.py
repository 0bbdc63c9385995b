"""Errors that reach the user, and how a child's exception crosses the pipe.

Neighbours: a worker packs a failed task's exception with :func:`dump_exception` (from
``_worker.outcome``, which a child imports without ``concurrent.futures.process``); an engine
calls :func:`load_exception` on the payload it receives; the front and the engines raise the
classes below. Nothing here does I/O.

A task's exception comes back with its own type and the child's formatted traceback as
``__cause__`` (a :class:`RemoteTraceback`, as ``ProcessPoolExecutor`` does). When the exception
cannot be pickled in the child or rebuilt in the parent, the future gets a :class:`RemoteError`
that carries the type name, message and traceback text instead.
"""

from __future__ import annotations

import pickle
import signal
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback
from typing import NamedTuple

from ._worker.outcome import add_note, dump_exception

__all__ = [
    "BrokenPoolError",
    "BrokenWorkerError",
    "DeliveryError",
    "RemoteError",
    "RemoteTraceback",
    "TaskTimeout",
    "add_note",
    "describe_exit",
    "dump_exception",
    "load_exception",
    "undeliverable",
]


class BrokenWorkerError(BrokenProcessPool):
    """The child process running this task died (signal, ``os._exit``, crash).

    Only the tasks that child was running get this error; the executor replaces the child and
    goes on. The message names the pid and the exit code or signal.
    """


class BrokenPoolError(BrokenProcessPool):
    """The executor as a whole cannot run work: an initializer failed or no child could start.

    Pending and later work fails with this error; the message carries the cause.
    """


class DeliveryError(BrokenProcessPool):
    """A task's call could not be unpickled in its child, or its result in the parent.

    Only that task fails: the child and the executor go on. ``__cause__`` is the exception
    the unpickling raised. A ``BrokenProcessPool`` subclass because ``ProcessPoolExecutor``
    reports these faults with ``BrokenProcessPool`` too (and breaks the whole pool).
    """


#: The child's formatted traceback, attached as ``__cause__`` of a task's exception: the very
#: class ``ProcessPoolExecutor`` uses (``str()`` is the traceback text, also in ``.tb``), so
#: code that checks for that one keeps working.
RemoteTraceback = _RemoteTraceback


class TaskTimeout(TimeoutError):
    """The task ran longer than its ``timeout`` (``ex.options(timeout=...)``) and was stopped:
    a coroutine cancelled in its worker, a plain call interrupted (and its worker replaced)."""


class RemoteError(Exception):
    """A task's exception that could not be pickled in the child or rebuilt in the parent."""

    def __init__(self, type_name: str, message: str, traceback_text: str) -> None:
        super().__init__(type_name, message, traceback_text)
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"


class _ExceptionPayload(NamedTuple):  # the tuple that _remote_exc.dump_exception pickles
    type_name: str  # e.g. "mymodule.MyError"
    message: str  # str(exc)
    traceback_text: str  # formatted in the child, with chained exceptions and notes
    pickled: bytes | None  # pickle of the exception itself; None when it cannot be pickled
    why_not_pickled: str  # "" or why pickling the exception failed


def load_exception(data: bytes | memoryview) -> BaseException:
    """Rebuild an exception from :func:`dump_exception`'s payload (``RemoteError`` if needed)."""
    payload = _ExceptionPayload(*pickle.loads(data))
    remote_tb = RemoteTraceback(f'\n"""\n{payload.traceback_text}"""')  # type: ignore[arg-type]
    exc: BaseException
    if payload.pickled is not None:
        try:
            exc = pickle.loads(payload.pickled)
        except Exception as rebuild_error:
            exc = RemoteError(payload.type_name, payload.message, payload.traceback_text)
            add_note(
                exc,
                f"aioexec: the {payload.type_name} raised in the child could not be rebuilt "
                f"in the parent ({type(rebuild_error).__name__}: {rebuild_error}); make the "
                "exception class importable in the parent and picklable (its __init__ must "
                "accept the args it passes to super().__init__).",
            )
        else:
            if not isinstance(exc, BaseException):
                exc = RemoteError(payload.type_name, payload.message, payload.traceback_text)
    else:
        exc = RemoteError(payload.type_name, payload.message, payload.traceback_text)
        add_note(
            exc,
            f"aioexec: the {payload.type_name} raised in the child could not be pickled "
            f"({payload.why_not_pickled}), so its type could not be kept.",
        )
    exc.__cause__ = remote_tb
    return exc


def undeliverable(cause: BaseException, what: str) -> DeliveryError:
    """The error of a task whose call or outcome could not be unpickled (``cause``) where
    ``what`` says."""
    error = DeliveryError(
        f"aioexec: {what} ({type(cause).__name__}: {cause}). Only this task failed."
    )
    # Its traceback runs through the engine thread's frames, which hold the engine: dropped,
    # so that a caller keeping the error does not keep the engine (and its thread) alive.
    cause.__traceback__ = None
    error.__cause__ = cause
    return error


def describe_exit(exitcode: int | None) -> str:
    """Words for a child's exit status: 'was killed by SIGKILL', 'exited with code 3'."""
    if exitcode is None:
        return "ended with an unknown status"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with code {exitcode}"
