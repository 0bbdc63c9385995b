"""The child process: one asyncio event loop running many tasks sent by the parent.

Neighbours: ``_process`` starts :func:`main` in a new process with the child's ends of two
pipes; frames follow ``_protocol``; exceptions cross with ``_errors``. This module never
imports ``_manager`` or ``_executor``.

Life of a child:

1. close what a ``fork`` start inherited, ignore SIGINT (the parent decides when work stops);
2. make the event loop (``loop_factory`` or asyncio's), run the initializer; on failure log it
   to the ``concurrent.futures`` logger (as ``ProcessPoolExecutor`` does), send INIT_FAILED
   and exit with code 1; else send READY;
3. serve frames: RUN_ASYNC becomes a task on the loop, RUN_SYNC runs in the child's one
   worker thread (so the loop keeps serving coroutines), CANCEL cancels a task, STOP makes
   the child exit once its tasks are answered;
4. end of file on the parent's pipe means the parent died: cancel everything, wait at most
   ``ORPHAN_GRACE`` seconds for the tasks to unwind, then ``os._exit``.

Results are pickled where they are produced (plain functions: in the worker thread) and
queued; the queue is written with one ``writev`` per loop iteration.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import pickle
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ._calls import describe_callable, new_task
from ._pipeio import SCRATCH_SIZE, read_once, write_all
from ._protocol import Chunk, Frame, FrameDecoder, Kind, OutBuffer, dumps, encode_frame, out_of_band
from ._remote_exc import dump_exception

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["ORPHAN_GRACE", "ChildConfig", "PipeEnd", "main"]

#: Seconds an orphaned child gives its cancelled coroutines before it exits anyway.
ORPHAN_GRACE = 2.0
_LOGGER = logging.getLogger("concurrent.futures")


class ChildConfig(NamedTuple):  # not a dataclass: the child would import dataclasses for it
    initializer: Callable[..., object] | None
    initargs: tuple[Any, ...]
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
    # Parent-side descriptors a ``fork`` child inherited; they must be closed so that the
    # child sees end of file when the parent dies. Empty for spawn and forkserver.
    inherited_fds: tuple[int, ...] = ()


class PipeEnd:
    """The child's end of one of its pipes: a descriptor.

    Pickled for a spawn or forkserver child as the descriptor that ``multiprocessing``
    duplicates into it (its ``DupFd``, as for a ``Connection``), so that the child need not
    import ``multiprocessing.connection`` (0.3 ms of its start-up, 1 ms with the garbage
    collections its allocations trigger) to rebuild one. A fork child inherits the same
    descriptor number."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Callable[[Any], PipeEnd], tuple[Any]]:
        from multiprocessing import reduction

        return _rebuild_pipe_end, (reduction.DupFd(self.fd),)


def _rebuild_pipe_end(dup: Any) -> PipeEnd:
    return PipeEnd(dup.detach())


def main(reader: PipeEnd, writer: PipeEnd, config: ChildConfig) -> None:
    """Entry point of a child process (the target of ``multiprocessing.Process``)."""
    for fd in config.inherited_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    loop = config.loop_factory() if config.loop_factory is not None else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    runtime = _Runtime(loop, reader.fd, writer.fd)
    try:
        if not runtime.initialize(config.initializer, config.initargs):
            sys.exit(1)
        loop.run_until_complete(runtime.serve())
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        runtime.close()
        loop.close()


def _write_blocking(fd: int, pieces: list[Chunk]) -> None:
    """Write a frame while the pipe is still blocking (before the loop serves it)."""
    out = OutBuffer()
    out.append(pieces)
    write_all(fd, out)


class _Runtime:
    def __init__(self, loop: asyncio.AbstractEventLoop, in_fd: int, out_fd: int) -> None:
        self._loop = loop
        self._in_fd = in_fd
        self._out_fd = out_fd
        self._decoder = FrameDecoder()
        self._scratch = bytearray(SCRATCH_SIZE)
        self._out = OutBuffer()
        self._flush_scheduled = False
        self._writer_registered = False
        self._reading = False  # frames of one read are being handled (see _send)
        # task id -> the asyncio task (coroutines) or future (plain functions) running it
        self._tasks: dict[int, asyncio.Future[Any]] = {}
        self._sync_pool: ThreadPoolExecutor | None = None  # made on the first plain function
        self._stopping = False  # STOP received: exit once every task is answered
        self._orphaned = False  # the parent is gone: exit as soon as tasks unwind
        self._finished: asyncio.Future[None] = loop.create_future()

    # -- start-up -----------------------------------------------------------------------

    def initialize(
        self, initializer: Callable[..., object] | None, initargs: tuple[Any, ...]
    ) -> bool:
        try:
            if initializer is not None:
                outcome = initializer(*initargs)
                if inspect.isawaitable(outcome):
                    self._loop.run_until_complete(_await(outcome))
        except BaseException as exc:
            _LOGGER.critical("Exception in initializer:", exc_info=True)
            _write_blocking(self._out_fd, encode_frame(Kind.INIT_FAILED, 0, dump_exception(exc)))
            return False
        _write_blocking(self._out_fd, encode_frame(Kind.READY))
        os.set_blocking(self._in_fd, False)
        os.set_blocking(self._out_fd, False)
        return True

    async def serve(self) -> None:
        self._loop.add_reader(self._in_fd, self._on_readable)
        try:
            await self._finished
        finally:
            self._loop.remove_reader(self._in_fd)

    def close(self) -> None:
        if self._sync_pool is not None:
            self._sync_pool.shutdown(wait=not self._orphaned)

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
            self._start_task(frame)
        elif kind is Kind.CANCEL:
            task = self._tasks.get(frame.task_id)
            if task is not None:
                task.cancel()
                if _not_started(task):
                    # Its coroutine never runs, so it cannot answer: answer for it. (A task
                    # that a task factory made, or on a loop without eager starts, may get its
                    # CANCEL in the same read as its RUN.)
                    del self._tasks[frame.task_id]
                    self._send(encode_frame(Kind.CANCELLED, frame.task_id))
        elif kind is Kind.STOP:
            self._stopping = True
            self._maybe_finish()
        else:
            raise RuntimeError(f"aioexec child: unexpected frame {kind.name} from the parent")

    def _start_task(self, frame: Frame) -> None:
        task_id = frame.task_id
        try:
            fn, args, kwargs = pickle.loads(frame.body, buffers=frame.buffers)
        except Exception as exc:
            # SystemExit and other BaseExceptions end the child, as in ProcessPoolExecutor.
            payload = dump_exception(exc, _unpickling_advice(exc))
            self._send(encode_frame(Kind.UNDELIVERABLE, task_id, payload))
            return
        if frame.kind is Kind.RUN_ASYNC:
            task: asyncio.Future[Any] = new_task(
                self._loop, self._run_coroutine(task_id, fn, args, kwargs)
            )
            if task.done():  # an eager task that never suspended: already answered
                return
        else:
            if self._sync_pool is None:
                # Imported here: a child that runs only coroutines never needs it.
                from concurrent.futures import ThreadPoolExecutor

                self._sync_pool = ThreadPoolExecutor(1, thread_name_prefix="aioexec-child-sync")
            task = self._loop.run_in_executor(
                self._sync_pool, _call_and_pickle, task_id, fn, args, kwargs
            )
            task.add_done_callback(self._on_sync_done)
        self._tasks[task_id] = task

    # -- running ------------------------------------------------------------------------

    async def _run_coroutine(
        self, task_id: int, fn: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        try:
            result = await fn(*args, **kwargs)
        except asyncio.CancelledError:
            pieces = encode_frame(Kind.CANCELLED, task_id)
        except BaseException as exc:
            pieces = encode_frame(Kind.ERROR, task_id, dump_exception(exc))
        else:
            pieces = _pickle_result(task_id, fn, result)
        self._tasks.pop(task_id, None)  # absent when the task ran eagerly to its end
        self._send(pieces)

    def _on_sync_done(self, future: asyncio.Future[tuple[int, list[Chunk]]]) -> None:
        if future.cancelled():  # only when the child shuts down as an orphan
            return
        task_id, pieces = future.result()
        del self._tasks[task_id]
        self._send(pieces)

    # -- writing ------------------------------------------------------------------------

    def _send(self, pieces: list[Chunk]) -> None:
        self._out.append(pieces)
        if self._reading or self._flush_scheduled or self._writer_registered:
            return  # written at the end of the read, by the scheduled flush, or when writable
        if self._tasks:
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
        if self._stopping and not self._tasks and not self._out and not self._finished.done():
            self._finished.set_result(None)

    def _on_parent_gone(self) -> None:
        if self._orphaned:
            return
        self._orphaned = True
        self._loop.remove_reader(self._in_fd)
        self._out = OutBuffer()  # nobody will read it
        for task in list(self._tasks.values()):
            task.cancel()
        # Bounded: a coroutine that swallows its cancellation must not keep an orphan alive.
        self._loop.call_later(ORPHAN_GRACE, _exit_now)
        waiters = [t for t in self._tasks.values() if isinstance(t, asyncio.Task)]
        self._loop.create_task(_exit_when_done(waiters))


def _not_started(task: asyncio.Future[Any]) -> bool:
    get_coro = getattr(task, "get_coro", None)  # a Task; plain functions run in a thread
    coro = get_coro() if get_coro is not None else None
    return inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED


async def _await(awaitable: Any) -> Any:
    return await awaitable


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


def _pickle_result(task_id: int, fn: Callable[..., Any], result: object) -> list[Chunk]:
    try:
        if type(result) is tuple:
            sent, wrapped = out_of_band(result)
        else:
            (sent,), wrapped = out_of_band((result,))
        payload = dumps(sent, wrapped)
    except BaseException as exc:
        note = (
            f"aioexec: the result of {describe_callable(fn)} ({type(result).__name__}) could "
            "not be pickled in the child to send it back; return picklable values "
            "(no locks, sockets, open files, generators or lambdas)."
        )
        return encode_frame(Kind.ERROR, task_id, dump_exception(exc, note))
    return encode_frame(Kind.RESULT, task_id, *payload)


def _call_and_pickle(
    task_id: int, fn: Callable[..., Any], args: Any, kwargs: Any
) -> tuple[int, list[Chunk]]:
    """Run a plain function in the worker thread and pickle its outcome there, off the loop."""
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        return task_id, encode_frame(Kind.ERROR, task_id, dump_exception(exc))
    return task_id, _pickle_result(task_id, fn, result)


def _unpickling_advice(exc: BaseException) -> str:
    if not isinstance(exc, (AttributeError, ImportError)):
        return ""
    return (
        "aioexec: the function (or a class it receives) must be importable by the child: "
        "define it at module level in a module the child can import. Functions defined in "
        "an interactive session, with python -c, or in a __main__ module that the child "
        "cannot re-import are not; move them into a module, and keep the code that starts "
        "the executor under `if __name__ == '__main__':`."
    )
