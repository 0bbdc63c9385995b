"""Non-blocking pipe I/O shared by both ends of a child's pipes.

Neighbours: ``_local.process`` (the parent's end, driven by the manager's selector) and
``_local.child`` (the child's end, driven by its event loop) call :func:`read_once` and
:func:`write_all`; ``_local.manager`` wakes up through a :class:`Wakeup`. Framing itself is
``_local.protocol``'s.
"""

from __future__ import annotations

import os
import threading

from . import forks
from .protocol import FrameDecoder, OutBuffer

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
    in flight at a time, so a burst of submissions costs one write.

    ``_armed`` (a byte is on its way) is read and written under ``_lock`` only, on both
    sides: a notifier's earlier work (an inbox append) is then visible to the manager once
    it has disarmed, with or without the GIL. Checking it without the lock would need a
    store-load barrier that free-threaded Python does not promise (a lost wake-up)."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = forks.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._lock = threading.Lock()
        self._armed = False  # a byte is on its way; later notifies need not write another
        self._closed = False  # notify() must not write to a closed descriptor

    def notify(self) -> None:
        with self._lock:
            if self._armed or self._closed:
                return
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
        with self._lock:
            self._armed = False

    def fds(self) -> list[int]:
        return [self.read_fd, self._write_fd]

    def close(self) -> None:
        with self._lock:
            self._closed = True
        forks.close((self._write_fd, self.read_fd))

    def disown(self) -> None:
        """In a forked process: the descriptors are closed already; never write again."""
        self._closed = True
