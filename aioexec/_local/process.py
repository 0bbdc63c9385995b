"""One child's handle in the parent: its process, pipe ends, codec state and tasks in flight.

Neighbours: only the local engine's manager (``_local.manager``, ``_local.answers``,
``_local.lease``) uses these handles, under the pool's lock; the process runs
``_local.child.main``; the pipes are opened and closed through ``_local.forks``.

A handle goes STARTING -> READY -> (RETIRING) -> gone. RETIRING means it takes no new work
(it reached ``max_tasks_per_child``, the executor shuts down, or its stream can no longer be
trusted) and was sent STOP or a signal. It is gone once its process sentinel fires; then the
manager fails whatever was still in flight.
"""

from __future__ import annotations

import enum
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess

from .._cpython import writable_bytes
from .._front.engine import EngineFuture, Task, WorkerId
from . import forks
from .child import ChildConfig, PipeEnd, main
from .pipeio import SCRATCH_SIZE, read_once, write_all
from .protocol import Chunk, Frame, FrameDecoder, HeaderCheck, OutBuffer

__all__ = ["ChildProcess", "ChildState"]

_F_SETPIPE_SZ = 1031  # Linux fcntl: resize a pipe's kernel buffer
_PIPE_SIZE = 1024 * 1024
# Bounded so that one chatty child cannot starve the others or the submit queue.
_READS_PER_WAKEUP = 8


class ChildState(enum.Enum):
    STARTING = "starting"  # process started, READY not received yet (it may take work)
    READY = "ready"  # initializer done, taking work
    RETIRING = "retiring"  # takes no more work: answers what it runs, then exits


class ChildProcess:
    """The parent's end of one child. Not thread-safe: used under the pool's lock."""

    def __init__(
        self,
        worker_id: WorkerId,
        ctx: BaseContext,
        config: ChildConfig,
        check: HeaderCheck,
    ) -> None:
        """``check``: how the decoder vets each answer's header (``_local.answers``)."""
        self.worker_id = worker_id
        self.state = ChildState.STARTING
        self.decoder = FrameDecoder(check, writable_bytes)
        self.out = OutBuffer()
        # task id -> its future, for every task sent and not yet answered
        self.running: dict[int, EngineFuture] = {}
        self.sync_running = 0  # how many of `running` are plain functions (at most 1)
        self.plain_task_id = 0  # the id of that plain function's task, if any
        # It runs a stoppable plain call, alone: it takes no other work meanwhile.
        self.exclusive = False
        self.stop_grace = 1.0  # seconds that call gets to stop before the child is killed
        self.replaced: str | None = None  # how the child it replaced ended (for stats)
        self.tasks_sent = 0  # counts towards max_tasks_per_child
        self.write_blocked = False  # the pipe was full; the manager waits for writability
        self.undelivered: list[Task] = []  # tasks never written whole to its closed pipe
        self.init_failed = False  # it sent INIT_FAILED: its exit breaks the executor
        self.watched = True  # the manager's selector watches read_fd (see _local.lease)
        self.eof = False  # read_fd reached end of file
        self.end_reason = ""  # why the parent stopped it, for its exit's log and errors
        self.exit_description = ""  # how it ended, once it did: "exited with code 0 (retired)"
        self.tasks_done = 0  # answered (or lost with it), for stats and the exit's log
        self.tasks_failed = 0  # of those, how many failed
        self.started_at = time.time()
        self._scratch = bytearray(SCRATCH_SIZE)

        to_child_r, self.write_fd = forks.pipe()
        self.read_fd, from_child_w = forks.pipe()
        for fd in (self.write_fd, self.read_fd):
            _grow_pipe(fd)
        self.process: BaseProcess = ctx.Process(  # type: ignore[attr-defined]
            target=main,
            args=(PipeEnd(to_child_r), PipeEnd(from_child_w), config),
            name=f"aioexec-worker-{worker_id}",
        )
        try:
            # A fork-method child keeps its own ends; every other descriptor of ours is
            # closed in it (``_local.forks``), so that it sees end of file when we die.
            with forks.keeping((to_child_r, from_child_w)):
                self.process.start()
        except BaseException:
            forks.close((self.write_fd, self.read_fd))
            raise
        finally:
            # The child has its own copies now; ours would hide its death from us (no EOF).
            forks.close((to_child_r, from_child_w))
        os.set_blocking(self.write_fd, False)
        os.set_blocking(self.read_fd, False)
        self.pid: int = self.process.pid
        self.sentinel: int = self.process.sentinel

    @property
    def in_flight(self) -> int:
        return len(self.running)

    def send(self, pieces: list[Chunk], task: Task | None = None) -> None:
        """Queue a frame (``task``: the task it carries, if any) for the manager to write."""
        self.out.append(pieces, task)

    def send_now(self, pieces: list[Chunk], task: Task) -> bool:
        """Queue a task's frame and write what the pipe takes at once; False when the manager
        thread must act: some of it waits for the pipe to drain, or the pipe turned out
        closed and the task must go to another child (see :meth:`flush`)."""
        if self.write_blocked:
            self.out.append(pieces, task)
            return True  # the manager already waits for room
        if not self.out and len(pieces) == 1:
            piece = pieces[0]
            try:
                written = os.write(self.write_fd, piece)
            except BlockingIOError:
                written = 0
            except OSError:  # EPIPE: nothing of it was written
                self.out.append(pieces, task)
                self.flush()
                return False
            if written == len(piece):
                return True
            pieces = [memoryview(piece)[written:]]
        self.out.append(pieces, task)
        return self.flush() and not self.undelivered

    def flush(self) -> bool:
        """Write what the pipe takes; True when nothing is left to write.

        EPIPE: the child died (its sentinel will tell the manager). The tasks whose frames
        were not completely written can never have reached it: they go to ``undelivered``,
        for the manager to send to another child; those written in full may have run, and
        fail with the child."""
        try:
            write_all(self.write_fd, self.out)
        except BlockingIOError:
            return False
        except OSError:
            self.undelivered += self.out.unwritten()  # type: ignore[arg-type]
            self.out = OutBuffer()
            self.state = ChildState.RETIRING  # no more work for it
        return True

    def read(
        self, on_frame: Callable[[Frame], None], max_reads: int | None = _READS_PER_WAKEUP
    ) -> bool:
        """Read what is available (at most ``max_reads`` reads, None: until the pipe is empty)
        and hand each whole frame to ``on_frame``. Returns False at end of file (the child
        closed its end: it exited). Raises ``ProtocolError`` for a corrupted stream."""
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

    def abort(self, why: str) -> None:
        """Stop the child because its stream can no longer be trusted (half a frame written
        or read when a ``KeyboardInterrupt`` landed, or garbage from the child): its tasks
        fail with ``BrokenWorkerError`` once its sentinel fires, saying ``why``."""
        self.state = ChildState.RETIRING
        self.end_reason = why
        self.stop_process(kill=True)

    def interrupt(self) -> None:
        """Stop the stoppable plain call it runs: SIGUSR1 raises ``TaskStopped`` in it. (Only
        the manager thread reaps children, and only after this handle is gone, so the pid
        cannot have been reused.)"""
        try:
            os.kill(self.pid, signal.SIGUSR1)
        except OSError:
            pass  # gone already

    def stop_process(self, kill: bool) -> None:
        """SIGTERM (or SIGKILL) the child, unless it is gone already."""
        # Process.terminate/kill skip a process already reaped (its pid may be reused by
        # then); os.kill would not.
        try:
            (self.process.kill if kill else self.process.terminate)()
        except (OSError, ValueError):
            pass  # gone already, or closed

    def close(self) -> None:
        # The process object stays usable (callers may still join() the snapshot they took
        # of ``_processes``); its sentinel is closed when it is garbage-collected.
        forks.close((self.write_fd, self.read_fd))


def _grow_pipe(fd: int) -> None:
    # Fewer wake-ups and partial writes for large payloads; Linux only, best effort.
    try:
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
    except (ImportError, OSError):
        pass
