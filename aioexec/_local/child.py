"""The child process: one asyncio event loop serving the frames its parent sends.

Neighbours: ``_local.process`` starts :func:`main` in a new process with the child's ends of
two pipes; frames follow ``_local.protocol``; the tasks themselves run in a
``_worker.runtime.WorkerRuntime``. This module never imports the front or the rest of the
local engine: a child pays for every import at start-up.

Life of a child:

1. ignore SIGINT (the parent decides when work stops; a Ctrl-C reaches the whole process
   group), name the process when ``setproctitle`` is installed;
2. make the event loop (``loop_factory`` or asyncio's), run the initializer; on failure log it
   to the ``concurrent.futures`` logger (as ``ProcessPoolExecutor`` does), send INIT_FAILED
   with an error that names what failed, and exit with code 1; else send READY;
3. serve frames: RUN_ASYNC, RUN_SYNC and RUN_ALONE go to the runtime, CANCEL cancels a task,
   STOP makes the child exit once its tasks are answered; SIGUSR1 stops a RUN_ALONE call;
4. end of file on the parent's pipe means the parent died: cancel everything, wait at most
   ``ORPHAN_GRACE`` seconds for the tasks to unwind, then ``os._exit``.

Answers are queued as they come and written with one ``writev`` per loop iteration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from .._cpython import fd_from_parent, pipe_end_for_child, writable_bytes
from .._worker.outcome import dump_exception
from .._worker.runtime import WorkerRuntime, run_initializer
from .pipeio import SCRATCH_SIZE, read_once, write_all
from .protocol import Chunk, Frame, FrameDecoder, Kind, OutBuffer, encode_frame

__all__ = ["ORPHAN_GRACE", "ChildConfig", "PipeEnd", "main"]

#: Seconds an orphaned child gives its cancelled coroutines before it exits anyway.
ORPHAN_GRACE = 2.0
#: Seconds an answer may wait for others to go out in the same write.
BATCH_TIME = 0.001
_LOGGER = logging.getLogger("concurrent.futures")


class ChildConfig(NamedTuple):  # not a dataclass: the child would import dataclasses for it
    initializer: Callable[..., object] | None
    initargs: tuple[Any, ...]
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
    title: str = ""  # the process title, when setproctitle is installed
    forked: bool = False  # started by fork: its __main__ is the parent's, as it was then


class PipeEnd:
    """The child's end of one of its pipes: a descriptor.

    Pickled for a spawn or forkserver child as the descriptor that ``multiprocessing``
    duplicates into it (``_cpython.pipe_end_for_child``), so that the child need not import
    ``multiprocessing.connection`` (0.3 ms of its start-up, 1 ms with the garbage collections
    its allocations trigger) to rebuild one. A fork child inherits the same number."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Callable[[Any], PipeEnd], tuple[Any]]:
        return _rebuild_pipe_end, (pipe_end_for_child(self.fd),)


def _rebuild_pipe_end(received: Any) -> PipeEnd:
    return PipeEnd(fd_from_parent(received))


def main(reader: PipeEnd, writer: PipeEnd, config: ChildConfig) -> None:
    """Entry point of a child process (the target of ``multiprocessing.Process``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The parent's stop of a stoppable call (RUN_ALONE); until the runtime exists, ignored.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    _set_title(config.title)
    in_fd, out_fd = reader.fd, writer.fd
    try:
        loop = _new_loop(config.loop_factory)
    except BaseException as exc:
        _fail_start(out_fd, exc, "aioexec: the loop_factory failed in a child process:", 1)
        sys.exit(1)
    asyncio.set_event_loop(loop)
    server = _Server(loop, in_fd, out_fd, config.forked)
    try:
        try:
            if config.initializer is not None:
                run_initializer(loop, config.initializer, config.initargs)
        except BaseException as exc:
            _fail_start(out_fd, exc, "Exception in initializer:", 0)
            sys.exit(1)
        server.start()
        signal.signal(signal.SIGUSR1, server.on_stop_signal)
        loop.run_until_complete(server.serve())
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        server.close()
        loop.close()


def _new_loop(loop_factory: Callable[[], asyncio.AbstractEventLoop] | None) -> Any:
    if loop_factory is None:
        return asyncio.new_event_loop()
    loop = loop_factory()
    if not isinstance(loop, asyncio.AbstractEventLoop):
        raise TypeError(
            f"aioexec: loop_factory {loop_factory!r} returned {type(loop).__name__}, not an "
            "event loop; pass a callable that returns a new event loop, such as "
            "uvloop.new_event_loop"
        )
    return loop


def _fail_start(out_fd: int, exc: BaseException, message: str, stage: int) -> None:
    """Log a failed start-up (as ProcessPoolExecutor logs a failed initializer) and tell the
    parent, which breaks the executor with this error. ``stage``, sent as the frame's task
    id: 0 the initializer, 1 the loop factory."""
    _LOGGER.critical(message, exc_info=True)
    out = OutBuffer()
    out.append(encode_frame(Kind.INIT_FAILED, stage, dump_exception(exc)))
    try:
        write_all(out_fd, out)  # the pipe is still blocking here
    except OSError:
        pass  # the parent is gone


def _set_title(title: str) -> None:
    if not title:
        return
    try:
        import setproctitle  # an optional extra
    except ImportError:
        return
    setproctitle.setproctitle(title)


class _Server:
    """The child's side of its pipes: frames in, answers out."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, in_fd: int, out_fd: int, forked: bool
    ) -> None:
        self._loop = loop
        self._in_fd = in_fd
        self._out_fd = out_fd
        self._decoder = FrameDecoder(new_bytes=writable_bytes)
        self._scratch = bytearray(SCRATCH_SIZE)
        self._out = OutBuffer()
        self._flush_scheduled = False
        self._writer_registered = False
        self._batch_started = 0.0  # when the first answer still in _out was queued
        self._reading = False  # frames of one read are being handled (see _send)
        self._runtime = WorkerRuntime(loop, self._answer, main_inherited=forked)
        self._stopping = False  # STOP received: exit once every task is answered
        self._orphaned = False  # the parent is gone: exit as soon as tasks unwind
        self._finished: asyncio.Future[None] = loop.create_future()

    def start(self) -> None:
        """Tell the parent that start-up succeeded, then stop blocking on the pipes."""
        self._out.append(encode_frame(Kind.READY))
        write_all(self._out_fd, self._out)
        os.set_blocking(self._in_fd, False)
        os.set_blocking(self._out_fd, False)

    async def serve(self) -> None:
        self._loop.add_reader(self._in_fd, self._on_readable)
        try:
            await self._finished
        finally:
            self._loop.remove_reader(self._in_fd)

    def close(self) -> None:
        self._runtime.close(wait=not self._orphaned)

    def on_stop_signal(self, signum: int, frame: object) -> None:
        self._runtime.on_stop_signal()

    # -- reading ------------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            n, _ = read_once(self._in_fd, self._decoder, self._scratch)
        except BlockingIOError:
            return
        except OSError:
            n = 0
        if n == 0:
            self._on_parent_gone()
            return
        self._reading = True
        try:
            while isinstance(frame := self._decoder.next_frame(), Frame):
                self._on_frame(frame)
        finally:
            self._reading = False
            # Answers of tasks that ran eagerly to their end go out in one write, now.
            if self._out and not self._flush_scheduled and not self._writer_registered:
                self._flush()

    def _on_frame(self, frame: Frame) -> None:
        kind = frame.kind
        if kind is Kind.RUN_ASYNC or kind is Kind.RUN_SYNC:
            self._runtime.start(frame.task_id, kind is Kind.RUN_ASYNC, frame.body, frame.buffers)
        elif kind is Kind.RUN_ALONE:
            self._runtime.start_alone(frame.task_id, frame.body, frame.buffers)
        elif kind is Kind.CANCEL:
            self._runtime.cancel(frame.task_id)
        elif kind is Kind.STOP:
            self._stopping = True
            self._maybe_finish()
        else:
            raise RuntimeError(f"aioexec worker: unexpected frame {kind.name} from the parent")

    # -- writing ------------------------------------------------------------------------

    def _answer(
        self,
        kind: int,
        task_id: int,
        body: Chunk = b"",
        buffers: Any = (),
        copied: bool = False,
    ) -> None:
        if not self._out:
            self._batch_started = time.monotonic()
        self._out.append(encode_frame(kind, task_id, body, buffers, copied))
        if self._writer_registered:
            return  # written when the pipe has room
        if time.monotonic() - self._batch_started > BATCH_TIME:
            # Answers wait for each other only while they come quickly: after tasks that
            # computed for a while, the parent must hear of the freed slots now (or it keeps
            # sending more work to whichever child answered first).
            self._flush()
            return
        if self._reading or self._flush_scheduled:
            return  # written at the end of the read, or by the scheduled flush
        if self._runtime.tasks:
            # Other tasks run: their answers may come in this same loop iteration, and
            # one write for all of them saves the parent wake-ups.
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        else:
            self._flush()  # nothing else can join this write: answer now

    def _flush(self) -> None:
        self._flush_scheduled = False
        try:
            write_all(self._out_fd, self._out)
        except BlockingIOError:
            if not self._writer_registered:
                self._writer_registered = True
                self._loop.add_writer(self._out_fd, self._flush)
            return
        except OSError:  # EPIPE: the parent is gone
            self._on_parent_gone()
            return
        if self._writer_registered:
            self._writer_registered = False
            self._loop.remove_writer(self._out_fd)
        self._maybe_finish()

    # -- ending -------------------------------------------------------------------------

    def _maybe_finish(self) -> None:
        if (
            self._stopping
            and not self._runtime.tasks
            and not self._out
            and not self._finished.done()
        ):
            self._finished.set_result(None)

    def _on_parent_gone(self) -> None:
        if self._orphaned:
            return
        self._orphaned = True
        self._loop.remove_reader(self._in_fd)
        self._out = OutBuffer()  # nobody will read it
        waiters = self._runtime.cancel_all()
        # Bounded: a coroutine that swallows its cancellation must not keep an orphan alive.
        self._loop.call_later(ORPHAN_GRACE, _exit_now)
        self._loop.create_task(_exit_when_done(waiters))


async def _exit_when_done(tasks: list[asyncio.Task[Any]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)
    _exit_now()


def _exit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    # Not sys.exit: a plain function may still be blocked in the worker thread, and joining
    # it at interpreter exit could keep an orphan alive forever.
    os._exit(0)
