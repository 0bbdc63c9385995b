"""How a child's exception is written for the pipe: the child's half of ``_errors``.

Neighbours: ``_child`` calls :func:`dump_exception` for a failed task; ``_errors`` re-exports
it and reads the payload back in the parent. Kept apart from ``_errors`` because that module
subclasses ``concurrent.futures.process.BrokenProcessPool``, and importing
``concurrent.futures.process`` (with ``queue`` and ``multiprocessing.queues``) would cost a
spawned child about 0.7 ms of its start-up for classes it never uses.
"""

from __future__ import annotations

import pickle
import traceback

__all__ = ["add_note", "dump_exception"]


def add_note(exc: BaseException, note: str) -> BaseException:
    """``exc.add_note(note)`` on every supported Python (3.10 lacks the method)."""
    notes = getattr(exc, "__notes__", None)
    if notes is None:
        notes = []
        try:
            setattr(exc, "__notes__", notes)  # noqa: B010 - mypy does not know __notes__ on 3.10
        except AttributeError:  # an exception type with __slots__ and no __dict__
            return exc
    notes.append(note)
    return exc


def _qualified_name(tp: type) -> str:
    module = tp.__module__
    return tp.__qualname__ if module == "builtins" else f"{module}.{tp.__qualname__}"


def dump_exception(exc: BaseException, note: str = "") -> bytes:
    """Serialise ``exc`` with its traceback text; never raises for an unpicklable exception.

    ``note`` is added to the exception after its traceback is formatted, so that the user
    reads it once, on the exception, rather than twice.
    """
    tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if note:
        add_note(exc, note)
    # Frames of the traceback reference every local of the failed task; drop them so that
    # pickling cannot touch them and memory is freed.
    exc.__traceback__ = None
    try:
        pickled: bytes | None = pickle.dumps(exc, protocol=5)
        why = ""
    except Exception as pickling_error:
        pickled = None
        why = f"{type(pickling_error).__name__}: {pickling_error}"
    try:
        message = str(exc)
    except Exception:
        message = f"<str() of the {type(exc).__name__} failed>"
    # The fields of ``_errors._ExceptionPayload``, as a plain tuple (a NamedTuple class
    # costs a child about 0.1 ms to create).
    payload = (_qualified_name(type(exc)), message, tb_text, pickled, why)
    return pickle.dumps(payload, protocol=5)
