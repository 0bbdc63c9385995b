"""Sans-IO wire protocol between the manager thread and a child: bytes in, frames out.

Neighbours: ``_manager`` (parent side) and ``_child`` (child side) own the pipes and call
into this module; nothing here touches ``os``, ``threading`` or ``asyncio``.

A frame is a fixed header, a table of out-of-band buffer lengths, the main pickle bytes and
then the buffers themselves::

    +------+-------+---------+----------+------------------+---------+-----+---------+
    | kind | nbufs | task id | main len | nbufs x buf len  |  main   | buf | buf ... |
    |  u8  |  u8   |   u64   |   u64    |    u64 each      |  bytes  |     |         |
    +------+-------+---------+----------+------------------+---------+-----+---------+

Pickle protocol 5 puts large binary payloads (numpy arrays, ``PickleBuffer``, and here also
large ``bytes`` arguments and results, see :func:`out_of_band`) out of band, so they are written
straight from the object's memory (``os.writev`` of the pieces returned by
:func:`encode_frame`) and read into one preallocated ``bytearray`` without another copy
(:meth:`FrameDecoder.get_buffer`).

Frame kinds and who sends them:

=============  =========  ==============================================================
kind           direction  meaning
=============  =========  ==============================================================
RUN_ASYNC      to child   body = pickled (fn, args, kwargs); run ``fn`` as a coroutine
RUN_SYNC       to child   body = pickled (fn, args, kwargs); run ``fn`` in a thread
CANCEL         to child   cancel task ``task id`` if it still runs (no body)
STOP           to child   take no more work, finish what runs, then exit (no body)
READY          to parent  the initializer succeeded; the child takes work (no body)
INIT_FAILED    to parent  body = pickled exception payload of the failed initializer
RESULT         to parent  body = pickled return value of task ``task id``
ERROR          to parent  body = pickled exception payload (see ``_errors``)
CANCELLED      to parent  task ``task id`` ended by cancellation (no body)
UNDELIVERABLE  to parent  body = exception payload: the task's call did not unpickle
=============  =========  ==============================================================

Every task the parent sends is answered by exactly one of RESULT, ERROR, CANCELLED or
UNDELIVERABLE; that
answer is what frees the task's slot in the child.
"""

from __future__ import annotations

import enum
import pickle
import struct
from collections import deque
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

__all__ = [
    "NEED_DATA",
    "Frame",
    "FrameDecoder",
    "Kind",
    "OutBuffer",
    "Payload",
    "ProtocolError",
    "dumps",
    "encode_frame",
    "out_of_band",
    "out_of_band_kwargs",
]


class Kind(enum.IntEnum):
    RUN_ASYNC = 1
    RUN_SYNC = 2
    CANCEL = 3
    STOP = 4
    READY = 10
    INIT_FAILED = 11
    RESULT = 12
    ERROR = 13
    CANCELLED = 14
    UNDELIVERABLE = 15


_HEADER: Final = struct.Struct("<BBQQ")  # kind | flags, nbufs, task id, main length
# Flag on the kind byte: every out-of-band buffer of the frame is copied when it is unpickled
# (see _OutOfBand), so the receiver may read the frame into memory it reuses afterwards.
_COPIED: Final = 0x80
_BUFLEN: Final = struct.Struct("<Q")
# Kind(value) goes through EnumMeta.__call__, measurably slow on the hot path; a dict is not.
_KINDS: Final = {int(k): k for k in Kind}

#: Frames with a body up to this size and no out-of-band buffers are encoded as one piece.
SMALL_FRAME: Final = 16 * 1024
#: Bodies at least this large are read straight into their final buffer.
DIRECT_READ_THRESHOLD: Final = 256 * 1024
#: The largest body a decoder keeps a reusable buffer for (see ``_COPIED``).
REUSE_MAX: Final = 64 * 1024 * 1024


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
    copies every one of them (the frame's ``copied`` flag)."""

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


class ProtocolError(Exception):
    """The byte stream does not follow the frame format: a bug, not a user error."""


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`FrameDecoder.next_frame` until a whole frame has arrived.
NEED_DATA: Final = _NeedData()


class Frame(NamedTuple):
    """One decoded frame. The body and buffers of a frame sent with ``copied`` may point into
    memory the decoder reuses: unpickle them before taking the next frame."""

    kind: Kind
    task_id: int
    body: memoryview  # the main pickle
    buffers: list[memoryview]  # its out-of-band buffers, in order


Chunk = bytes | bytearray | memoryview


def encode_frame(
    kind: Kind,
    task_id: int = 0,
    body: Chunk = b"",
    buffers: Sequence[Chunk] = (),
    copied: bool = False,
) -> list[Chunk]:
    """Return the pieces of one frame, ready for ``os.writev`` (no large payload is copied;
    a small frame is one ``bytes``, so that it costs one short write)."""
    if not buffers and type(body) is bytes and len(body) <= SMALL_FRAME:
        return [_HEADER.pack(kind, 0, task_id, len(body)) + body]
    lengths = [memoryview(b).nbytes for b in buffers]
    flags = _COPIED if copied and buffers else 0
    header = _HEADER.pack(kind | flags, len(lengths), task_id, memoryview(body).nbytes)
    if lengths:
        header += b"".join(_BUFLEN.pack(n) for n in lengths)
    pieces: list[Chunk] = [header]
    if body:
        pieces.append(body)
    pieces.extend(b for b, n in zip(buffers, lengths, strict=True) if n)
    return pieces


class FrameDecoder:
    """Incremental frame parser.

    Feed it with :meth:`receive_data` (any chunking) or, for large bodies, by reading into
    :meth:`get_buffer` and calling :meth:`buffer_updated`; take frames with :meth:`next_frame`
    until it returns :data:`NEED_DATA`.
    """

    def __init__(self) -> None:
        self._buf = bytearray()  # unparsed bytes: headers, small bodies, following frames
        self._pos = 0  # where the unparsed part of _buf starts
        # The frame whose header is parsed and whose body is still arriving, if any:
        # kind, id, main length, buffer lengths, flags
        self._head: tuple[Kind, int, int, list[int], int] | None = None
        self._body: bytearray | memoryview | None = None  # its body, read directly (large)
        # Reused for the bodies of _COPIED frames: fresh memory for every large frame costs
        # more in page faults than the copy itself.
        self._spare = bytearray()
        self._filled = 0  # bytes of _body already received

    def receive_data(self, data: Chunk) -> None:
        if self._body is not None:
            room = len(self._body) - self._filled
            n = min(room, len(data))
            self._body[self._filled : self._filled + n] = data[:n]
            self._filled += n
            data = data[n:]
        if data:
            self._buf += data

    def get_buffer(self) -> memoryview | None:
        """Where to read the rest of a large body directly, or None to use receive_data."""
        if self._body is None or self._filled == len(self._body):
            return None
        return memoryview(self._body)[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes

    def next_frame(self) -> Frame | _NeedData:
        if self._head is None and (
            len(self._buf) - self._pos < _HEADER.size or not self._parse_head()
        ):
            return NEED_DATA
        assert self._head is not None
        kind, task_id, main_len, buflens, flags = self._head
        total = main_len + sum(buflens)
        if self._body is not None:
            if self._filled < total:
                return NEED_DATA
            body = memoryview(self._body)
            self._body = None
        else:
            if len(self._buf) - self._pos < total:
                if total >= DIRECT_READ_THRESHOLD:
                    self._start_direct_body(total, reuse=bool(flags & _COPIED))
                return NEED_DATA
            end = self._pos + total
            body = memoryview(self._buf[self._pos : end])  # a copy: _buf moves on
            self._pos = end
            self._compact()
        self._head = None
        if not buflens:
            # tuple.__new__: a NamedTuple's own constructor is a Python function, and this
            # runs for every answer.
            return tuple.__new__(Frame, (kind, task_id, body, []))
        buffers = []
        offset = main_len
        for n in buflens:
            buffers.append(body[offset : offset + n])
            offset += n
        return Frame(kind, task_id, body[:main_len], buffers)

    def _parse_head(self) -> bool:
        """Parse the next frame's header; the caller has checked that a fixed header is in."""
        avail = len(self._buf) - self._pos
        value, nbufs, task_id, main_len = _HEADER.unpack_from(self._buf, self._pos)
        kind = _KINDS.get(value & ~_COPIED)
        if kind is None:
            raise ProtocolError(f"unknown frame kind {value} at stream offset {self._pos}")
        need = _HEADER.size + nbufs * _BUFLEN.size
        if avail < need:
            return False
        start = self._pos + _HEADER.size
        buflens = (
            [_BUFLEN.unpack_from(self._buf, start + i * _BUFLEN.size)[0] for i in range(nbufs)]
            if nbufs
            else []
        )
        self._pos += need
        self._head = (kind, task_id, main_len, buflens, value & _COPIED)
        return True

    def _start_direct_body(self, total: int, reuse: bool) -> None:
        if not reuse or total > REUSE_MAX:
            self._body = bytearray(total)
        else:
            if len(self._spare) < total:
                # A new one, not a resize: views of the old one may still be alive.
                self._spare = bytearray(total)
            self._body = memoryview(self._spare)[:total]
        already = self._buf[self._pos :]
        self._body[: len(already)] = already
        self._filled = len(already)
        del self._buf[:]
        self._pos = 0

    def _compact(self) -> None:
        # Drop consumed bytes now and then rather than on every frame: deleting the head of a
        # bytearray moves the tail, which would make many small frames quadratic.
        if self._pos == len(self._buf):
            del self._buf[:]
            self._pos = 0
        elif self._pos > 65536:
            del self._buf[: self._pos]
            self._pos = 0


class OutBuffer:
    """Frames waiting to be written; hands out pieces for one ``writev`` at a time."""

    def __init__(self, max_pieces: int = 1024) -> None:
        self._pieces: deque[memoryview] = deque()
        self._max = max_pieces  # stays below the system's IOV_MAX
        self.nbytes = 0

    def __bool__(self) -> bool:
        return bool(self._pieces)

    def append(self, pieces: Sequence[Chunk]) -> None:
        for p in pieces:
            view = memoryview(p)
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")  # so that consume() can slice it by bytes
            self._pieces.append(view)
            self.nbytes += view.nbytes

    def pending(self) -> list[memoryview]:
        """The next pieces to write, in order (at most ``max_pieces``)."""
        if len(self._pieces) <= self._max:
            return list(self._pieces)
        return [self._pieces[i] for i in range(self._max)]

    def consume(self, nbytes: int) -> None:
        """Forget the first ``nbytes`` bytes, which the caller has written."""
        self.nbytes -= nbytes
        pieces = self._pieces
        while nbytes:
            head = pieces[0]
            if head.nbytes <= nbytes:
                nbytes -= head.nbytes
                pieces.popleft()
            else:
                pieces[0] = head[nbytes:]
                nbytes = 0
