"""The one place where the reliability tests reach aioexec's internal wire protocol.

The decoder fuzz test (``test_decoder_fuzz.py``) needs the sans-IO frame decoder itself, and
the corrupt-child tests need bytes that look like frame headers. Every other reliability test
uses the public API only. When the protocol module moves or its header changes, update this
file (``test_raw_header_matches_the_encoder`` says when :func:`raw_header` went stale).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from aioexec._local.protocol import NEED_DATA, FrameDecoder, Kind, ProtocolError, encode_frame

__all__ = [
    "NEED_DATA",
    "FrameDecoder",
    "Kind",
    "ProtocolError",
    "encode_frame",
    "frame_bytes",
    "raw_header",
]

# The header as the protocol module's docstring draws it: a CRC-32 (u32) of the fixed part,
# then kind (u8), flags (u8), number of out-of-band buffers (u32), task id (u64), main pickle
# length (u64); then, when there are buffers, one u64 length per buffer and a CRC-32 of them.
_CRC = struct.Struct("<I")
_FIXED = struct.Struct("<BBIQQ")
_BUFLEN = struct.Struct("<Q")


def raw_header(
    kind: int, task_id: int, main_len: int, buflens: Sequence[int] = (), flags: int = 0
) -> bytes:
    """A frame header with any field values, even ones the encoder would never write (an
    unknown kind, an absurd length), and a correct checksum: so that the tests of absurd
    lengths reach the length checks rather than stop at the checksum."""
    fixed = _FIXED.pack(kind, flags, len(buflens), task_id, main_len)
    header = _CRC.pack(zlib.crc32(fixed)) + fixed
    if buflens:
        table = b"".join(_BUFLEN.pack(n) for n in buflens)
        header += table + _CRC.pack(zlib.crc32(table))
    return header


def frame_bytes(
    kind: Kind, task_id: int = 0, body: bytes = b"", buffers: Sequence[bytes] = ()
) -> bytes:
    """One valid frame, as the bytes that travel on the pipe."""
    return b"".join(bytes(piece) for piece in encode_frame(kind, task_id, body, buffers))
