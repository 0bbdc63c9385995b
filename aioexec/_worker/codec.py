"""How calls and results become bytes for a worker: pickle protocol 5, large bytes out of band.

Neighbours: the engines (``_local.engine``, ``aioexec.ray``) pickle each submitted call here in
the caller's thread, and a worker (``_worker.runtime``) pickles each result here; the local
wire protocol (``_local.protocol``) frames a :class:`Payload`'s pieces without copying them.
No I/O happens here.

A :class:`Payload` is the main pickle plus its out-of-band buffers (protocol 5). Besides
objects that offer their memory themselves (NumPy arrays, ``PickleBuffer``), large ``bytes``
arguments and results travel out of band too (:func:`out_of_band`): written straight from the
object's memory, never copied into the pickle.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NamedTuple

from .outcome import add_note, describe_callable

__all__ = [
    "OUT_OF_BAND_MIN",
    "Payload",
    "dumps",
    "out_of_band",
    "out_of_band_kwargs",
    "pickle_call",
]

#: ``bytes`` at least this large, passed as an argument or returned, travel out of band:
#: written to the pipe from the object's own memory instead of being copied into the pickle.
OUT_OF_BAND_MIN: Final = 64 * 1024


class _OutOfBand:
    """Stands in for a large ``bytes`` while pickling: it travels out of band (the C pickler
    never lets a ``reducer_override`` see a ``bytes``) and unpickles as the ``bytes``."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: object) -> tuple[type[bytes], tuple[pickle.PickleBuffer]]:
        return bytes, (pickle.PickleBuffer(self.data),)


def _is_large_bytes(value: object) -> bool:
    return type(value) is bytes and len(value) >= OUT_OF_BAND_MIN


def out_of_band(values: tuple[Any, ...]) -> tuple[tuple[Any, ...], int]:
    """``values`` with each large ``bytes`` wrapped so that it is sent out of band, and how
    many were wrapped."""
    wrapped = sum(map(_is_large_bytes, values))
    if not wrapped:
        return values, 0
    return tuple(_OutOfBand(v) if _is_large_bytes(v) else v for v in values), wrapped


def out_of_band_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Like :func:`out_of_band`, for keyword arguments."""
    wrapped = sum(map(_is_large_bytes, kwargs.values()))
    if not wrapped:
        return kwargs, 0
    return {k: _OutOfBand(v) if _is_large_bytes(v) else v for k, v in kwargs.items()}, wrapped


class Payload(NamedTuple):
    """A pickled object: the main pickle, its out-of-band buffers, and whether unpickling
    copies every one of them (then the receiver may read it into memory it reuses)."""

    body: bytes
    buffers: Sequence[memoryview]
    copied: bool


def dumps(obj: object, wrapped: int = 0, pickler: Any = pickle) -> Payload:
    """Pickle ``obj`` with protocol 5; ``wrapped``: how many :func:`out_of_band` wrappers it
    holds (when they are all its out-of-band buffers, the receiver may reuse its memory)."""
    buffers: list[pickle.PickleBuffer] = []
    body = pickler.dumps(obj, protocol=5, buffer_callback=buffers.append)
    if not buffers:
        # The common case, made cheap: a submitted call waits in the parent as this
        # payload, and an object the garbage collector need not track costs nothing there
        # (tuple.__new__: a NamedTuple's own constructor is a Python function).
        return tuple.__new__(Payload, (body, (), wrapped == 0))
    return Payload(body, [b.raw() for b in buffers], len(buffers) == wrapped)


_NO_KWARGS: dict[str, Any] = {}  # pickled, never changed


def pickle_call(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    by_value: bool = False,
    pickler: Any = None,
) -> Payload:
    """Pickle a call for a worker: ``(fn, args, kwargs)``. ``by_value``: with cloudpickle,
    which sends lambdas, nested functions and functions of ``__main__`` by value (the worker
    unpickles them with the standard ``pickle``, and needs cloudpickle installed too).
    ``pickler``: the cloudpickle module to use for that (the Ray engine passes Ray's own
    copy, ``ray.cloudpickle``, which every Ray worker has); default: the ``cloudpickle``
    package.

    On failure, raise the pickling error with a note that names the object that could not
    be pickled and says what to do. The out-of-band buffers still point into the caller's
    objects (no copy) until the call is written out."""
    if not by_value:
        pickler = pickle
    elif pickler is None:
        import cloudpickle  # an optional extra: imported only when asked for

        pickler = cloudpickle
    try:
        sent_args, wrapped = out_of_band(tuple(args))
        if kwargs:
            sent_kwargs, wrapped_kwargs = out_of_band_kwargs(dict(kwargs))
            wrapped += wrapped_kwargs
        else:
            sent_kwargs = _NO_KWARGS
        return dumps((fn, sent_args, sent_kwargs), wrapped, pickler)
    except Exception as exc:
        raise add_note(exc, _explain_pickling_failure(fn, args, kwargs, pickler)) from None


def _unpicklable_part(
    fn: object, args: Sequence[Any], kwargs: Mapping[str, Any], pickler: Any
) -> str:
    parts: list[tuple[str, object]] = [("the function", fn)]
    parts += [(f"positional argument {i}", a) for i, a in enumerate(args)]
    parts += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for what, obj in parts:
        try:
            pickler.dumps(obj, protocol=5, buffer_callback=lambda _: None)
        except Exception:
            return f"{what} ({type(obj).__name__} {_short_repr(obj)})"
    return "the call"


def _short_repr(obj: object) -> str:
    try:
        text = repr(obj)
    except Exception:
        return f"<{type(obj).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _explain_pickling_failure(
    fn: object, args: Sequence[Any], kwargs: Mapping[str, Any], pickler: Any
) -> str:
    what = _unpicklable_part(fn, args, kwargs, pickler)
    advice = (
        "Functions sent to a worker must be importable by it: define them at module level, "
        "not as a lambda or nested function (or install the cloudpickle extra, "
        "pip install 'aioexec-pool[cloudpickle]', and create the executor with "
        "fallback='cloudpickle' to send them by value)."
        if what.startswith("the function")
        else "Arguments sent to a worker must be picklable (no locks, sockets, open files, "
        "generators or lambdas)."
    )
    return (
        f"aioexec: could not pickle {what} of the call to {describe_callable(fn)}, so it "
        f"cannot be sent to a worker process. {advice} Or create the executor with "
        "fallback='thread' to run such calls in a thread of this process"
        + ("." if pickler is pickle else "; cloudpickle could not send it either.")
    )
