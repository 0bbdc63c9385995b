"""Non-blocking pipe I/O shared by both ends of a child's pipes.

Neighbours: ``_process`` (the parent's end, driven by the manager's selector) and ``_child``
(the child's end, driven by its event loop) call these two functions; framing itself is
``_protocol``'s.
"""

from __future__ import annotations

import os

from ._protocol import FrameDecoder, OutBuffer

__all__ = ["SCRATCH_SIZE", "read_once", "write_all"]

#: Size of the reusable buffer small reads go through (a fresh ``os.read(fd, n)`` would
#: allocate and shrink an n-byte object on every call).
SCRATCH_SIZE = 256 * 1024


def read_once(fd: int, decoder: FrameDecoder, scratch: bytearray) -> int:
    """Read once from ``fd`` into ``decoder``: straight into a large body's own buffer when one
    is being received, else through ``scratch``. Returns the byte count, 0 at end of file;
    raises ``BlockingIOError`` when nothing is available."""
    target = decoder.get_buffer()
    if target is not None:
        n = os.readv(fd, [target])
        decoder.buffer_updated(n)
        return n
    n = os.readv(fd, [scratch])
    if n:
        decoder.receive_data(memoryview(scratch)[:n])
    return n


def write_all(fd: int, out: OutBuffer) -> None:
    """Write ``out`` to ``fd`` until it is empty; ``BlockingIOError`` when the pipe is full
    (what was written is consumed from ``out`` either way)."""
    while out:
        out.consume(os.writev(fd, out.pending()))
