"""The one place where the reliability tests reach aioexec's internal wire protocol.

The decoder fuzz test (``test_decoder_fuzz.py``) needs the sans-IO frame decoder itself, and
the corrupt-child tests need bytes that look like frame headers. Every other reliability test
uses the public API only. When the protocol module moves or its header changes, update this
file (``test_raw_header_matches_the_encoder`` says when :func:`raw_header` went stale).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from aioexec._protocol import NEED_DATA, FrameDecoder, Kind, ProtocolError, encode_frame

__all__ = [
    "NEED_DATA",
    "FrameDecoder",
    "Kind",
    "ProtocolError",
    "encode_frame",
    "frame_bytes",
    "raw_header",
]

# The header as _protocol's docstring draws it: kind (u8, bit 7 a flag), number of out-of-band
# buffers (u8), task id (u64), main pickle length (u64), then one u64 length per buffer.
_HEADER = struct.Struct("<BBQQ")
_BUFLEN = struct.Struct("<Q")


def raw_header(kind: int, task_id: int, main_len: int, buflens: Sequence[int] = ()) -> bytes:
    """A frame header with any field values, even ones the encoder would never write (an
    unknown kind, an absurd length). If the header gains a checksum, compute it here too, so
    that the tests of absurd lengths still reach the length checks."""
    return _HEADER.pack(kind, len(buflens), task_id, main_len) + b"".join(
        _BUFLEN.pack(n) for n in buflens
    )


def frame_bytes(
    kind: Kind, task_id: int = 0, body: bytes = b"", buffers: Sequence[bytes] = ()
) -> bytes:
    """One valid frame, as the bytes that travel on the pipe."""
    return b"".join(bytes(piece) for piece in encode_frame(kind, task_id, body, buffers))
