"""One child's handle in the parent: its process, pipe ends, codec state and tasks in flight.

Neighbours: only ``_manager`` creates and uses these handles (from its own thread); the
process runs ``_child.main``.

A handle goes STARTING -> READY -> (RETIRING) -> gone. RETIRING means it takes no new work
(it reached ``max_tasks_per_child`` or the executor shuts down) and was sent STOP. It is gone
once its process sentinel fires; then the manager fails whatever was still in flight.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Sequence
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess

from ._child import ChildConfig, PipeEnd, main
from ._future import AnyTaskFuture
from ._pipeio import SCRATCH_SIZE, read_once, write_all
from ._protocol import Chunk, Frame, FrameDecoder, OutBuffer
from ._scheduler import ChildId

__all__ = ["ChildProcess", "ChildState"]

_F_SETPIPE_SZ = 1031  # Linux fcntl: resize a pipe's kernel buffer
_PIPE_SIZE = 1024 * 1024
# Bounded so that one chatty child cannot starve the others or the submit queue.
_READS_PER_WAKEUP = 8


class ChildState(enum.Enum):
    STARTING = "starting"  # process started, READY not received yet (it may take work)
    READY = "ready"  # initializer done, taking work
    RETIRING = "retiring"  # sent STOP: answers what it runs, then exits


class ChildProcess:
    """The parent's end of one child. Not thread-safe: the manager thread owns it."""

    def __init__(
        self, child_id: ChildId, ctx: BaseContext, config: ChildConfig, held_fds: Sequence[int]
    ) -> None:
        """``held_fds``: the parent's other descriptors, which a forked child closes."""
        self.child_id = child_id
        self.state = ChildState.STARTING
        self.decoder = FrameDecoder()
        self.out = OutBuffer()
        # task id -> its future, for every task sent and not yet answered
        self.running: dict[int, AnyTaskFuture] = {}
        self.sync_running = 0  # how many of `running` are plain functions (at most 1)
        self.tasks_sent = 0  # counts towards max_tasks_per_child
        self.write_blocked = False  # the pipe was full; the manager waits for writability
        self.init_failed = False  # it sent INIT_FAILED: its exit breaks the executor
        self.watched = True  # the manager's selector watches read_fd (see _lease)
        self.eof = False  # read_fd reached end of file
        self._scratch = bytearray(SCRATCH_SIZE)

        to_child_r, self._to_child_w = ctx.Pipe(duplex=False)
        self._from_child_r, from_child_w = ctx.Pipe(duplex=False)
        self.write_fd = self._to_child_w.fileno()
        self.read_fd = self._from_child_r.fileno()
        for fd in (self.write_fd, self.read_fd):
            _grow_pipe(fd)
        if ctx.get_start_method() == "fork":
            # A forked child inherits every descriptor of ours. It closes them: holding the
            # write end of its own input (or of another child's), it would never see end of
            # file when we die.
            config = config._replace(inherited_fds=(*held_fds, self.write_fd, self.read_fd))
        self.process: BaseProcess = ctx.Process(  # type: ignore[attr-defined]
            target=main,
            args=(PipeEnd(to_child_r.fileno()), PipeEnd(from_child_w.fileno()), config),
            name=f"aioexec-child-{child_id}",
        )
        try:
            self.process.start()
        finally:
            # The child has its own copies now; ours would hide its death from us (no EOF).
            to_child_r.close()
            from_child_w.close()
        os.set_blocking(self.write_fd, False)
        os.set_blocking(self.read_fd, False)
        self.pid: int = self.process.pid
        self.sentinel: int = self.process.sentinel

    @property
    def in_flight(self) -> int:
        return len(self.running)

    def fds(self) -> list[int]:
        return [self.write_fd, self.read_fd]

    def send(self, pieces: list[Chunk]) -> None:
        self.out.append(pieces)

    def send_now(self, pieces: list[Chunk]) -> bool:
        """Queue a frame and write what the pipe takes at once; False when some of it must
        wait for the pipe to drain (the manager thread then watches it)."""
        if self.write_blocked:
            self.out.append(pieces)
            return True  # the manager already waits for room
        if not self.out and len(pieces) == 1:
            piece = pieces[0]
            try:
                written = os.write(self.write_fd, piece)
            except BlockingIOError:
                written = 0
            except OSError:  # EPIPE: the child died; its sentinel will tell the manager
                return True
            if written == len(piece):
                return True
            pieces = [memoryview(piece)[written:]]
        self.out.append(pieces)
        return self.flush()

    def flush(self) -> bool:
        """Write what the pipe takes; True when everything queued is written."""
        try:
            write_all(self.write_fd, self.out)
        except BlockingIOError:
            return False
        except OSError:  # EPIPE: the child died; its sentinel will tell the manager
            self.out = OutBuffer()
        return True

    def read(
        self, on_frame: Callable[[Frame], None], max_reads: int | None = _READS_PER_WAKEUP
    ) -> bool:
        """Read what is available (at most ``max_reads`` reads, None: until the pipe is empty)
        and hand each whole frame to ``on_frame``.

        Returns False at end of file (the child closed its end: it exited).
        """
        reads = 0
        while max_reads is None or reads < max_reads:
            reads += 1
            try:
                n, full = read_once(self.read_fd, self.decoder, self._scratch)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if n == 0:
                return False
            while isinstance(frame := self.decoder.next_frame(), Frame):
                on_frame(frame)
            if not full and max_reads is not None:
                # The pipe was empty: no second read just to hear EAGAIN. Whatever arrives
                # next makes the (level-triggered) selector report the pipe again.
                return True
        return True  # more may be waiting: the selector reports the pipe again

    def close(self) -> None:
        # The process object stays usable (callers may still join() the snapshot they took
        # of ``_processes``); its sentinel is closed when it is garbage-collected.
        self._to_child_w.close()
        self._from_child_r.close()


def _grow_pipe(fd: int) -> None:
    # Fewer wake-ups and partial writes for large payloads; Linux only, best effort.
    try:
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
    except (ImportError, OSError):
        pass
