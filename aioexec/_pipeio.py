"""Non-blocking pipe I/O shared by both ends of a child's pipes.

Neighbours: ``_process`` (the parent's end, driven by the manager's selector) and ``_child``
(the child's end, driven by its event loop) call :func:`read_once` and :func:`write_all`;
``_manager`` wakes up through a :class:`Wakeup`. Framing itself is ``_protocol``'s.
"""

from __future__ import annotations

import os
import threading

from ._protocol import FrameDecoder, OutBuffer

__all__ = ["SCRATCH_SIZE", "Wakeup", "read_once", "write_all"]

#: Size of the reusable buffer small reads go through (a fresh ``os.read(fd, n)`` would
#: allocate and shrink an n-byte object on every call).
SCRATCH_SIZE = 256 * 1024


def read_once(fd: int, decoder: FrameDecoder, scratch: bytearray) -> tuple[int, bool]:
    """Read once from ``fd`` into ``decoder``: straight into a large body's own buffer when one
    is being received, else through ``scratch``. Returns the byte count (0 at end of file)
    and whether the read filled its buffer (if not, the pipe was empty when it returned);
    raises ``BlockingIOError`` when nothing is available."""
    target = decoder.get_buffer()
    if target is not None:
        n = os.readv(fd, [target])
        decoder.buffer_updated(n)
        return n, n == len(target)
    n = os.readv(fd, [scratch])
    if n:
        decoder.receive_data(memoryview(scratch)[:n])
    return n, n == len(scratch)


def write_all(fd: int, out: OutBuffer) -> None:
    """Write ``out`` to ``fd`` until it is empty; ``BlockingIOError`` when the pipe is full
    (what was written is consumed from ``out`` either way)."""
    while out:
        out.consume(os.writev(fd, out.pending()))


class Wakeup:
    """A self-pipe that wakes the manager's selector from other threads; at most one byte is
    in flight at a time, so a burst of submissions costs one write."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._armed = False  # a byte is on its way; later posts need not write another
        self._lock = threading.Lock()  # keeps notify() from writing to a closed descriptor
        self._closed = False

    def notify(self) -> None:
        if self._armed:
            return
        with self._lock:
            if not self._closed:
                self._armed = True
                try:
                    os.write(self._write_fd, b"\0")
                except BlockingIOError:
                    pass

    def drain(self) -> None:
        """Empty the pipe, then disarm; the caller takes its inbox after this.

        The order matters: disarming first would let a notify() write a byte that the read
        then swallows, leaving the pipe empty while armed, and every later wake-up lost. A
        byte written between the read and the disarm only costs one spurious wake-up.
        """
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        self._armed = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            os.close(self._write_fd)
        os.close(self.read_fd)
