"""How a child's answer becomes a future's outcome, in the manager thread.

Neighbours: ``_manager`` calls these for every RESULT, ERROR and UNDELIVERABLE frame and for
the futures it fails; exceptions are rebuilt by ``_errors``.
"""

from __future__ import annotations

import pickle
from concurrent.futures import InvalidStateError
from typing import Any

from ._errors import DeliveryError, load_exception
from ._future import TaskFuture
from ._protocol import Frame, Kind

__all__ = ["fail", "outcome", "undeliverable"]


def fail(future: TaskFuture[Any], error: BaseException) -> None:
    try:
        future.set_exception(error)
    except InvalidStateError:
        pass


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
