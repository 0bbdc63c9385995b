"""Sans-IO wire protocol between the parent and a child process: bytes in, frames out.

Neighbours: the parent's handle of a child (``_local.process``) and the child itself
(``_local.child``) own the pipes and call into this module; nothing here touches ``os``,
``threading`` or ``asyncio``. Payloads are pickled by ``_worker.codec``.

A frame is a fixed header, a table of out-of-band buffer lengths, the main pickle bytes and
then the buffers themselves::

    +-------+------+-------+-------+---------+----------+-----------------------+------+-----+
    | crc32 | kind | flags | nbufs | task id | main len | nbufs x buf len, crc32 | main | buf |
    |  u32  |  u8  |  u8   |  u32  |   u64   |   u64    | u64 each, u32 (nbufs>0)|      | ... |
    +-------+------+-------+-------+---------+----------+-----------------------+------+-----+

The first CRC-32 covers the fixed header, and the length table (when there is one) ends with
its own, so that no corrupted header (a child that wrote garbage to its pipe, a flipped bit)
is ever trusted, not even its count of buffers: the decoder raises :class:`ProtocolError`
before it waits for, or allocates, anything that a corrupted field announces. Bodies are not
checked; a damaged body fails only its own task, when it is unpickled.

Pickle protocol 5 puts large binary payloads out of band, so they are written straight from
the object's memory (``os.writev`` of the pieces returned by :func:`encode_frame`) and read
into one buffer without another copy (:meth:`FrameDecoder.get_buffer`). Large bodies are read
into anonymous memory maps: the kernel commits their pages as the bytes arrive, so a header
announcing more than ever comes costs no memory, and no pass is spent zero-filling.

Frame kinds and who sends them:

=============  =========  ==============================================================
kind           direction  meaning
=============  =========  ==============================================================
RUN_ASYNC      to child   body = pickled (fn, args, kwargs); run ``fn`` as a coroutine
RUN_SYNC       to child   body = pickled (fn, args, kwargs); run ``fn`` in a thread
CANCEL         to child   cancel task ``task id`` if it still runs (no body)
STOP           to child   take no more work, finish what runs, then exit (no body)
RUN_ALONE      to child   as RUN_SYNC, in the child's main thread, stoppable by SIGUSR1
                          (the child runs nothing else meanwhile)
READY          to parent  the initializer succeeded; the child takes work (no body)
INIT_FAILED    to parent  body = exception payload; task id 0: the initializer failed,
                          1: the loop factory
RESULT         to parent  body = pickled return value of task ``task id``
ERROR          to parent  body = exception payload (see ``_worker.outcome``)
CANCELLED      to parent  task ``task id`` ended by cancellation (no body)
UNDELIVERABLE  to parent  body = exception payload: the task's call did not unpickle
=============  =========  ==============================================================

Every task the parent sends is answered by exactly one of RESULT, ERROR, CANCELLED or
UNDELIVERABLE (``_worker.outcome.Answer``); that answer is what frees the task's slot.
"""

from __future__ import annotations

import enum
import mmap
import struct
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from .._worker.codec import OUT_OF_BAND_MIN
from .._worker.outcome import Answer

__all__ = [
    "MAX_BUFFERS",
    "MAX_FRAME",
    "NEED_DATA",
    "Chunk",
    "Frame",
    "FrameDecoder",
    "Kind",
    "OutBuffer",
    "ProtocolError",
    "encode_frame",
]


class Kind(enum.IntEnum):
    RUN_ASYNC = 1
    RUN_SYNC = 2
    CANCEL = 3
    STOP = 4
    RUN_ALONE = 5
    READY = 10
    INIT_FAILED = 11
    RESULT = Answer.RESULT
    ERROR = Answer.ERROR
    CANCELLED = Answer.CANCELLED
    UNDELIVERABLE = Answer.UNDELIVERABLE


_CRC: Final = struct.Struct("<I")
_FIXED: Final = struct.Struct("<BBIQQ")  # kind, flags, nbufs, task id, main length
_HEADER_SIZE: Final = _CRC.size + _FIXED.size
_BUFLEN: Final = struct.Struct("<Q")
# Flag: every out-of-band buffer of the frame is copied when it is unpickled (see
# _worker.codec), so the receiver may read the frame into memory it reuses afterwards.
_COPIED: Final = 0x01
# Kind(value) goes through EnumMeta.__call__, measurably slow on the hot path; a dict is not.
_KINDS: Final = {int(k): k for k in Kind}

#: The most out-of-band buffers one frame may carry.
MAX_BUFFERS: Final = 1 << 16
#: The largest frame (main pickle plus buffers) a decoder accepts: 1 TiB.
MAX_FRAME: Final = 1 << 40
#: Frames with a body up to this size and no out-of-band buffers are encoded as one piece.
SMALL_FRAME: Final = 16 * 1024
#: Bodies at least this large are read straight into their final buffer.
DIRECT_READ_THRESHOLD: Final = 256 * 1024
#: Bodies at least this large are read into an anonymous memory map (see the docstring).
MAPPED_BODY_MIN: Final = 1024 * 1024
#: The largest body a decoder keeps a reusable buffer for (see ``_COPIED``).
REUSE_MAX: Final = 64 * 1024 * 1024


class ProtocolError(Exception):
    """The byte stream does not follow the frame format (a corrupted or foreign stream)."""


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
    # its out-of-band buffers, in order: views of the body, or (large ``bytes`` of a frame
    # sent with ``copied``) each read into its own ``bytes`` (see ``FrameDecoder``)
    buffers: list[Any]


Chunk = bytes | bytearray | memoryview

#: ``new_bytes(n)``: a new ``bytes`` of ``n`` bytes and a writable view of its storage, or
#: None (see ``_cpython.writable_bytes``).
NewBytes = Callable[[int], "tuple[bytes, memoryview] | None"]

#: ``check(kind, task_id, size)``: called for each header before its body is awaited; raises
#: ProtocolError for a frame the receiver cannot be expecting (see ``_local.answers``).
HeaderCheck = Callable[[Kind, int, int], None]


def encode_frame(
    kind: int,
    task_id: int = 0,
    body: Chunk = b"",
    buffers: Sequence[Chunk] = (),
    copied: bool = False,
) -> list[Chunk]:
    """Return the pieces of one frame, ready for ``os.writev`` (no large payload is copied;
    a small frame is one ``bytes``, so that it costs one short write)."""
    if not buffers and type(body) is bytes and len(body) <= SMALL_FRAME:
        fixed = _FIXED.pack(kind, 0, 0, task_id, len(body))
        return [_CRC.pack(zlib.crc32(fixed)) + fixed + body]
    lengths = [memoryview(b).nbytes for b in buffers]
    flags = _COPIED if copied and buffers else 0
    fixed = _FIXED.pack(kind, flags, len(lengths), task_id, memoryview(body).nbytes)
    header = _CRC.pack(zlib.crc32(fixed)) + fixed
    if lengths:
        table = b"".join(_BUFLEN.pack(n) for n in lengths)
        header += table + _CRC.pack(zlib.crc32(table))
    pieces: list[Chunk] = [header]
    if body:
        pieces.append(body)
    pieces.extend(b for b, n in zip(buffers, lengths, strict=True) if n)
    return pieces


class FrameDecoder:
    """Incremental frame parser.

    Feed it with :meth:`receive_data` (any chunking) or, for large bodies, by reading into
    :meth:`get_buffer` and calling :meth:`buffer_updated`; take frames with :meth:`next_frame`
    until it returns :data:`NEED_DATA`. After a :class:`ProtocolError` the stream cannot be
    trusted any more: the caller must stop using it.
    """

    def __init__(self, check: HeaderCheck | None = None, new_bytes: NewBytes | None = None) -> None:
        """``new_bytes``: makes the ``bytes`` that large out-of-band buffers of a ``_COPIED``
        frame are read into directly (``_cpython.writable_bytes``); None: they are read into
        one buffer with the main pickle, and unpickling copies them out of it."""
        self._check = check
        self._new_bytes = new_bytes
        self._buf = bytearray()  # unparsed bytes: headers, small bodies, following frames
        self._pos = 0  # where the unparsed part of _buf starts
        # The frame whose header is parsed and whose body is still arriving, if any:
        # kind, id, main length, buffer lengths, flags
        self._head: tuple[Kind, int, int, list[int], int] | None = None
        # A large body, read directly: where its bytes go, in order (the whole body, or the
        # main pickle and then each buffer's own object), and what the frame hands out.
        self._targets: list[memoryview] = []
        self._target = 0  # the one being filled
        self._at = 0  # bytes of it filled
        self._parts: tuple[Any, list[Any] | None] | None = None  # (body or main, buffers)
        # Reused for the bodies of _COPIED frames: fresh memory for every large frame costs
        # more in page faults than the copy itself.
        self._spare = bytearray()

    def receive_data(self, data: Chunk) -> None:
        while data and self._target < len(self._targets):
            target = self._targets[self._target]
            n = min(len(target) - self._at, len(data))
            target[self._at : self._at + n] = data[:n]
            data = data[n:]
            self.buffer_updated(n)
        if data:
            self._buf += data

    def get_buffer(self) -> memoryview | None:
        """Where to read the rest of a large body directly, or None to use receive_data."""
        if self._target == len(self._targets):
            return None
        return self._targets[self._target][self._at :]

    def buffer_updated(self, nbytes: int) -> None:
        self._at += nbytes
        if self._at == len(self._targets[self._target]):
            self._target += 1
            self._at = 0

    def next_frame(self) -> Frame | _NeedData:
        if self._head is None and (
            len(self._buf) - self._pos < _HEADER_SIZE or not self._parse_head()
        ):
            return NEED_DATA
        assert self._head is not None
        kind, task_id, main_len, buflens, flags = self._head
        total = main_len + sum(buflens)
        if self._parts is not None:
            if self._target < len(self._targets):
                return NEED_DATA
            whole, split = self._parts
            self._parts = None
            self._targets = []  # views of objects the frame now owns: let go first
            self._target = 0
            self._head = None
            if split is not None:
                return Frame(kind, task_id, memoryview(whole), split)
            body = memoryview(whole)
        else:
            if len(self._buf) - self._pos < total:
                if total >= DIRECT_READ_THRESHOLD:
                    self._start_direct_body(main_len, buflens, flags)
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
        """Parse and check the next frame's header; the caller has checked that a fixed
        header is in. False until its length table is in too."""
        pos = self._pos
        buf = self._buf
        if self._crc(pos, pos + _CRC.size, pos + _HEADER_SIZE):
            raise ProtocolError(
                f"frame header at stream offset {pos} fails its checksum: the stream is "
                "corrupted (something other than aioexec wrote to the pipe?)"
            )
        value, flags, nbufs, task_id, main_len = _FIXED.unpack_from(buf, pos + _CRC.size)
        kind = _KINDS.get(value)
        if kind is None or flags & ~_COPIED:
            raise ProtocolError(f"unknown frame kind {value} (flags {flags}) at offset {pos}")
        if nbufs > MAX_BUFFERS:
            raise ProtocolError(
                f"frame header at stream offset {pos} announces {nbufs} buffers "
                f"(at most {MAX_BUFFERS})"
            )
        start = pos + _HEADER_SIZE
        need = _HEADER_SIZE + (nbufs * _BUFLEN.size + _CRC.size if nbufs else 0)
        if len(buf) - pos < need:
            return False
        if nbufs and self._crc(pos + need - _CRC.size, start, pos + need - _CRC.size):
            raise ProtocolError(
                f"the buffer lengths of the frame at stream offset {pos} fail their checksum: "
                "the stream is corrupted"
            )
        buflens = (
            [_BUFLEN.unpack_from(self._buf, start + i * _BUFLEN.size)[0] for i in range(nbufs)]
            if nbufs
            else []
        )
        total = main_len + sum(buflens)
        if total > MAX_FRAME:
            raise ProtocolError(
                f"{kind.name} frame at offset {pos} announces {total} bytes (at most "
                f"{MAX_FRAME}): the stream is corrupted"
            )
        if self._check is not None:
            self._check(kind, task_id, total)
        self._pos += need
        self._head = (kind, task_id, main_len, buflens, flags)
        return True

    def _crc(self, at: int, start: int, end: int) -> bool:
        """True when the CRC-32 stored at ``at`` does not match bytes ``start:end``."""
        stored: int = _CRC.unpack_from(self._buf, at)[0]
        return zlib.crc32(memoryview(self._buf)[start:end]) != stored

    def _start_direct_body(self, main_len: int, buflens: list[int], flags: int) -> None:
        total = main_len + sum(buflens)
        made = None
        if flags & _COPIED and self._new_bytes is not None and max(buflens) >= OUT_OF_BAND_MIN:
            # Every buffer becomes a bytes when unpickled: read each into that very object.
            made = [self._new_bytes(n) for n in buflens]
        if made is not None and None not in made:
            main = bytearray(main_len)
            self._parts = (main, [obj for obj, _ in made])  # type: ignore[misc]
            targets = [memoryview(main), *(view for _, view in made)]  # type: ignore[misc]
        else:
            body = self._body_buffer(total, reuse=bool(flags & _COPIED))
            self._parts = (body, None)
            targets = [memoryview(body)]
        self._targets = [t for t in targets if len(t)]
        self._target = self._at = 0
        already = self._buf[self._pos :]
        del self._buf[:]
        self._pos = 0
        self.receive_data(already)

    def _body_buffer(self, total: int, reuse: bool) -> bytearray | memoryview | mmap.mmap:
        if reuse and total <= REUSE_MAX:
            if len(self._spare) < total:
                # A new one, not a resize: views of the old one may still be alive.
                self._spare = bytearray(total)
            return memoryview(self._spare)[:total]
        if total < MAPPED_BODY_MIN:
            return bytearray(total)
        try:
            # Private: its pages are committed as the bytes arrive (none for a header that
            # announces more than ever comes), with huge pages where the system allows.
            body = mmap.mmap(-1, total, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except (OSError, OverflowError, ValueError) as exc:
            raise ProtocolError(f"cannot map {total} bytes for a frame body: {exc}") from exc
        advice = getattr(mmap, "MADV_HUGEPAGE", None)
        if advice is not None:
            try:
                body.madvise(advice)
            except OSError:
                pass  # advice only
        return body

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
    """Frames waiting to be written; hands out pieces for one ``writev`` at a time.

    A frame may be appended with a tag (the parent tags each task's frame with its task):
    :meth:`unwritten` then tells which tagged frames were not completely written, which is
    what a reader that went away can never have received."""

    def __init__(self, max_pieces: int = 1024) -> None:
        self._pieces: deque[memoryview] = deque()
        self._max = max_pieces  # stays below the system's IOV_MAX
        self.nbytes = 0
        self._appended = 0  # bytes appended so far
        self._written = 0  # bytes consumed so far
        self._marks: deque[tuple[int, object]] = deque()  # (end offset, tag) of tagged frames

    def __bool__(self) -> bool:
        return bool(self._pieces)

    def append(self, pieces: Sequence[Chunk], tag: object = None) -> None:
        for p in pieces:
            view = memoryview(p)
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")  # so that consume() can slice it by bytes
            self._pieces.append(view)
            self.nbytes += view.nbytes
            self._appended += view.nbytes
        if tag is not None:
            self._marks.append((self._appended, tag))

    def unwritten(self) -> list[object]:
        """The tags of the frames not completely written yet, in order."""
        return [tag for _, tag in self._marks]

    def pending(self) -> list[memoryview]:
        """The next pieces to write, in order (at most ``max_pieces``)."""
        if len(self._pieces) <= self._max:
            return list(self._pieces)
        return [self._pieces[i] for i in range(self._max)]

    def consume(self, nbytes: int) -> None:
        """Forget the first ``nbytes`` bytes, which the caller has written."""
        self.nbytes -= nbytes
        self._written += nbytes
        marks = self._marks
        while marks and marks[0][0] <= self._written:
            marks.popleft()
        pieces = self._pieces
        while nbytes:
            head = pieces[0]
            if head.nbytes <= nbytes:
                nbytes -= head.nbytes
                pieces.popleft()
            else:
                pieces[0] = head[nbytes:]
                nbytes = 0
