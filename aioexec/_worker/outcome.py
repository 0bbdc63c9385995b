"""How a worker reports a task's outcome: answer kinds, results and exceptions as bytes.

Neighbours: ``_worker.runtime`` packs every outcome here; ``_errors`` (in the parent) reads an
exception payload back with ``load_exception``; ``_worker.codec`` pickles results. Kept free
of ``concurrent.futures.process`` (which ``_errors`` needs for its classes): importing it, with
``queue`` and ``multiprocessing.queues``, would cost a spawned child about 0.7 ms of start-up.

Packing never raises, whatever the task returned or raised: an exception whose ``__str__``,
``__reduce__`` or traceback formatting raises (even ``SystemExit`` or ``KeyboardInterrupt``)
is still reported, as a ``RemoteError`` payload, and only its own task fails.
"""

from __future__ import annotations

import enum
import pickle
import sys
import traceback

__all__ = ["Answer", "add_note", "describe_callable", "dump_exception", "unpickling_advice"]


class Answer(enum.IntEnum):
    """How a task ended: exactly one answer per task a worker received. The values are the
    local wire protocol's frame kinds (``_local.protocol.Kind``)."""

    RESULT = 12  # payload: the pickled return value
    ERROR = 13  # payload: dump_exception() of what it raised
    CANCELLED = 14  # no payload: it ended by cancellation
    UNDELIVERABLE = 15  # payload: dump_exception() of why its call did not unpickle


def add_note(exc: BaseException, note: str) -> BaseException:
    """``exc.add_note(note)`` on every supported Python (3.10 lacks the method)."""
    try:
        notes = getattr(exc, "__notes__", None)
        if notes is None:
            notes = []
            setattr(exc, "__notes__", notes)  # noqa: B010 - mypy does not know __notes__ on 3.10
        notes.append(note)
    except Exception:  # __slots__ without __dict__, or a __notes__ that is not a list
        pass
    return exc


def describe_callable(fn: object) -> str:
    """``module.qualname`` of a function, for messages."""
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if not isinstance(name, str):
        return _safe_repr(fn)
    return f"{module}.{name}" if isinstance(module, str) else name


def _safe_repr(obj: object) -> str:
    try:
        return repr(obj)
    except BaseException:
        return f"<{type(obj).__name__} object>"


def _qualified_name(tp: type) -> str:
    module = tp.__module__
    return tp.__qualname__ if module == "builtins" else f"{module}.{tp.__qualname__}"


def dump_exception(exc: BaseException, note: str = "") -> bytes:
    """Serialise ``exc`` with its traceback text; never raises (see the module docstring).

    ``note`` is added to the exception after its traceback is formatted, so that the user
    reads it once, on the exception, rather than twice.
    """
    try:
        tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException as format_error:
        tb_text = (
            f"{_qualified_name(type(exc))}: <its traceback could not be formatted: "
            f"{type(format_error).__name__}>\n"
        )
    if note:
        add_note(exc, note)
    # Frames of the traceback reference every local of the failed task; drop them so that
    # pickling cannot touch them and memory is freed.
    exc.__traceback__ = None
    try:
        pickled: bytes | None = _dumps_exception(exc)
        why = ""
    except BaseException as pickling_error:  # even SystemExit from a __reduce__
        pickled = None
        why = f"{type(pickling_error).__name__}: {_safe_str(pickling_error)}"
    # The fields of ``_errors._ExceptionPayload``, as a plain tuple (a NamedTuple class
    # costs a child about 0.1 ms to create).
    payload = (_qualified_name(type(exc)), _safe_str(exc), tb_text, pickled, why)
    return pickle.dumps(payload, protocol=5)


def _dumps_exception(exc: BaseException) -> bytes:
    """Pickle ``exc``; by value when plain pickle cannot and this worker has cloudpickle
    loaded (an exception class that came by value, from the parent's ``__main__``)."""
    try:
        return pickle.dumps(exc, protocol=5)
    except Exception:
        by_value = sys.modules.get("cloudpickle")
        if by_value is None:
            raise
    return by_value.dumps(exc, protocol=5)  # type: ignore[no-any-return]


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except BaseException:
        return f"<str() of the {type(exc).__name__} failed>"


def unpickling_advice(exc: BaseException, main_path: str | None, inherited: bool = False) -> str:
    """What to do when a task's call did not unpickle in its worker (``exc``); ``main_path``:
    the file of the worker's main module, None when it could not re-import it; ``inherited``:
    the worker's main module is its parent's, as it was when the worker was forked."""
    if not isinstance(exc, (AttributeError, ImportError)):
        return ""
    if inherited:
        where = (
            "This worker was started with the 'fork' start method: it has the parent's "
            "__main__ as it was then, so what was defined there later (further down a "
            "script, in a later notebook cell) does not exist here. "
        )
        by_value = (
            "before the executor starts its workers; or create the executor with "
            "fallback='cloudpickle' (the cloudpickle extra), which sends functions of "
            "__main__ by value."
        )
    elif main_path is None:
        where = (
            "The parent's __main__ could not be re-imported here (an interactive session, "
            "python -c, or a script read from stdin), so nothing defined there exists in the "
            "worker. "
        )
        by_value = (
            "install the cloudpickle extra (pip install 'aioexec-pool[cloudpickle]'): "
            "what such a __main__ defines is then sent by value."
        )
    else:
        where = (
            "The worker re-imports the main module without running its "
            "`if __name__ == '__main__':` block, so what is defined in that block does not "
            "exist here. "
        )
        by_value = (
            "create the executor with fallback='cloudpickle' (the cloudpickle extra), which "
            "sends functions of __main__ by value."
        )
    return (
        "aioexec: the function (or a class it receives) must be importable by the worker. "
        f"{where}Define it at module level in a module the worker can import, or {by_value}"
    )
