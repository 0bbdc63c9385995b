"""What crosses Ray between the driver and an actor: one ``bytes`` request, one ``bytes`` reply.

Neighbours: the driver (``aioexec.ray._calls``) encodes each call with :func:`encode_request`
and reads the actor's answer with :func:`decode_reply`; the actor (``aioexec.ray._actor``) does
the opposite. The call itself was pickled by ``_worker.codec`` (a ``Payload``: a pickle and
its out-of-band buffers); outcomes are the worker runtime's answers (``_worker.outcome``).
No I/O and no Ray here.

Why one ``bytes`` each way: Ray moves a single ``bytes`` argument and a ``bytes`` result at
the cost of a trivial ``echo(int)`` call; ``run(int, bytes) -> tuple`` measured about 13 %
fewer calls per second and 0.27 ms more per call (prototype, ``probe_ray_signature.py``).

Layout (little-endian; n: how many out-of-band buffers)::

    request: task id (u64) | coroutine? (u8) | n (u32) | n x length (u64) | pickle | buffers
    reply:   answer kind (u8)                | n (u32) | n x length (u64) | pickle | buffers
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from .._worker.codec import Payload

__all__ = ["decode_reply", "decode_request", "encode_reply", "encode_request"]

_REQUEST = struct.Struct("<QBI")
_REPLY = struct.Struct("<BI")
_LENGTH = struct.Struct("<Q")

Chunk = bytes | bytearray | memoryview


def _pack(head: bytes, body: Chunk, buffers: Sequence[Any]) -> bytes:
    if not buffers:
        return head + body if type(body) is bytes else b"".join((head, body))
    lengths = [_LENGTH.pack(memoryview(b).nbytes) for b in buffers]
    return b"".join((head, *lengths, body, *buffers))


def _unpack(data: bytes, offset: int, count: int) -> tuple[memoryview, list[memoryview]]:
    view = memoryview(data)
    if not count:
        return view[offset:], []
    lengths = [_LENGTH.unpack_from(data, offset + 8 * i)[0] for i in range(count)]
    end = len(data)
    buffers = []
    for length in reversed(lengths):  # the buffers end the message, in order
        buffers.append(view[end - length : end])
        end -= length
    buffers.reverse()
    return view[offset + 8 * count : end], buffers


def encode_request(task_id: int, is_async: bool, call: Payload) -> bytes:
    """The request for ``run``: the task's id, its kind, and its pickled call."""
    return _pack(_REQUEST.pack(task_id, is_async, len(call.buffers)), call.body, call.buffers)


def decode_request(data: bytes) -> tuple[int, bool, memoryview, list[memoryview]]:
    """(task id, is coroutine, pickle, out-of-band buffers) of a request."""
    task_id, is_async, count = _REQUEST.unpack_from(data)
    body, buffers = _unpack(data, _REQUEST.size, count)
    return task_id, bool(is_async), body, buffers


def encode_reply(kind: int, body: Chunk = b"", buffers: Sequence[Any] = ()) -> bytes:
    """The reply of ``run`` or ``hello``: an answer kind (``_worker.outcome.Answer``) and its
    payload."""
    return _pack(_REPLY.pack(kind, len(buffers)), body, buffers)


def decode_reply(data: bytes) -> tuple[int, memoryview, list[memoryview]]:
    """(answer kind, pickle, out-of-band buffers) of a reply."""
    kind, count = _REPLY.unpack_from(data)
    body, buffers = _unpack(data, _REPLY.size, count)
    return kind, body, buffers
