"""The Ray actor: one worker of an ``AsyncRayExecutor``, running the shared worker runtime.

Neighbours: the driver (``aioexec.ray._manager`` creates actors and says ``hello``;
``aioexec.ray._calls`` sends ``run`` and ``cancel``) talks to :class:`RayWorker` in the bytes
of ``aioexec.ray._wire``. The tasks run in a ``_worker.runtime.WorkerRuntime``, the very code a
local child runs: eager starts, plain functions on one thread, exception packing, results that
cannot be pickled, ``SystemExit`` raised by user code: all shared, nothing re-implemented here.
This module imports nothing of the driver side.

An async actor runs each *concurrency group* on its own thread with its own event loop:

* "default" (``max_concurrency`` = child_concurrency + 1: the coroutines and one plain
  function): ``hello`` (once, first), then ``run``. Without a ``loop_factory`` the runtime
  lives on this group's loop; with one, on a loop made by ``loop_factory`` in a thread of ours,
  and ``run`` hands each call over to it (two thread hops per call: see ``docs/ray.md``).
* "control" (1): ``cancel`` and ``stats``. A cancel never waits behind the running calls (in
  the default group 96 of 100 burst cancels arrived too late); it hops to the runtime's loop.
* "watch" (1): ``watch``, which never returns: its call fails when the actor is lost, idle or
  not (the analogue of a process sentinel).

Cancellation rules (``ray.cancel`` is not used: it lost about 18 % of early cancels):

* ``cancel(id)`` of a running task cancels it in the runtime (its ``finally`` runs); the task
  answers CANCELLED, or its result if it swallowed the cancellation;
* ``cancel(id)`` of a task not started yet (``cancel`` and ``run`` travel in different groups,
  so a cancel can overtake its ``run``) leaves a tombstone: ``run(id)`` answers CANCELLED
  without starting it;
* ``cancel(id)`` of a task that already answered changes nothing: the ids answered recently
  are remembered (``_FINISHED_REMEMBERED``), so a late cancel leaves no tombstone behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pickle
import threading
from collections.abc import Callable
from typing import Any

import ray

from .._worker.outcome import Answer, dump_exception
from .._worker.runtime import WorkerRuntime, initialize, run_initializer
from ._wire import decode_request, encode_reply

__all__ = ["RayWorker", "WorkerConfig", "actor_class"]

#: (initializer, initargs, loop_factory), pickled by the driver with Ray's cloudpickle.
WorkerConfig = tuple[Callable[..., object] | None, tuple[Any, ...], Callable[[], Any] | None]

#: How many answered task ids an actor remembers, so that a late cancel leaves no tombstone.
_FINISHED_REMEMBERED = 4096


class RayWorker:
    """One worker: a Ray async actor (see the module docstring)."""

    def __init__(self, config: bytes) -> None:
        self._config = config
        self._runtime: WorkerRuntime | None = None
        # The loop of the default group (``run``), and the loop the runtime lives on (the
        # same one unless a loop_factory made another).
        self._ray_loop: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # -- on the runtime's loop only --
        self._tombstones: set[int] = set()  # ids cancelled before their run arrived
        self._finished: dict[int, None] = {}  # recently answered ids, oldest first
        # -- on the default group's loop only --
        self._waiters: dict[int, asyncio.Future[bytes]] = {}  # task id -> its run's reply
        self._never: concurrent.futures.Future[None] = concurrent.futures.Future()

    # -- default group ----------------------------------------------------------------------

    async def hello(self) -> bytes:
        """Set up the runtime and run the initializer; reply (pid, node id) or the error."""
        self._ray_loop = asyncio.get_running_loop()
        try:
            initializer, initargs, loop_factory = pickle.loads(self._config)
            if loop_factory is None:
                self._runtime = WorkerRuntime(self._ray_loop, self._answer)
                self._loop = self._ray_loop
                if initializer is not None:
                    await initialize(initializer, initargs)
            else:
                await asyncio.wrap_future(self._start_own_loop(loop_factory, initializer, initargs))
        except BaseException as exc:  # SystemExit from an initializer included
            return encode_reply(Answer.ERROR, dump_exception(exc))
        node_id = ray.get_runtime_context().get_node_id()
        return encode_reply(Answer.RESULT, pickle.dumps((os.getpid(), node_id), protocol=5))

    async def run(self, request: bytes) -> bytes:
        """Run one call; reply its outcome (never raises: the runtime catches everything)."""
        task_id, is_async, body, buffers = decode_request(request)
        loop = self._ray_loop
        assert loop is not None, "hello() first"
        assert self._loop is not None, "hello() first"
        waiter: asyncio.Future[bytes] = loop.create_future()
        self._waiters[task_id] = waiter
        if self._loop is loop:
            self._start(task_id, is_async, body, buffers)  # may answer at once (eager start)
        else:
            self._loop.call_soon_threadsafe(self._start, task_id, is_async, body, buffers)
        return await waiter

    # -- control group (a thread and loop of its own) ---------------------------------------

    @ray.method(concurrency_group="control")  # type: ignore[untyped-decorator,unused-ignore]
    def cancel(self, task_id: int) -> None:
        """Cancel a task (see the module docstring); the driver calls it after ``hello``."""
        assert self._loop is not None, "hello() first"
        self._loop.call_soon_threadsafe(self._cancel, task_id)

    @ray.method(concurrency_group="control")  # type: ignore[untyped-decorator,unused-ignore]
    def stats(self) -> dict[str, int]:
        """Counts for tests: tasks running, tombstones left, replies awaited."""
        running = len(self._runtime.tasks) if self._runtime is not None else 0
        return {
            "running": running,
            "tombstones": len(self._tombstones),
            "waiting": len(self._waiters),
        }

    # -- watch group ------------------------------------------------------------------------

    @ray.method(concurrency_group="watch")  # type: ignore[untyped-decorator,unused-ignore]
    async def watch(self) -> None:
        """Never returns: the driver learns from its failure that the actor was lost."""
        await asyncio.wrap_future(self._never)

    # -- on the runtime's loop --------------------------------------------------------------

    def _start(self, task_id: int, is_async: bool, body: memoryview, buffers: Any) -> None:
        assert self._runtime is not None
        if task_id in self._tombstones:
            self._tombstones.discard(task_id)
            self._answer(Answer.CANCELLED, task_id)
            return
        self._runtime.start(task_id, is_async, body, buffers)

    def _cancel(self, task_id: int) -> None:
        assert self._runtime is not None
        if task_id in self._runtime.tasks:
            self._runtime.cancel(task_id)
        elif task_id not in self._finished:
            self._tombstones.add(task_id)

    def _answer(
        self, kind: int, task_id: int, body: Any = b"", buffers: Any = (), copied: bool = False
    ) -> None:
        """The runtime's answer for one task: becomes the reply of its ``run``."""
        finished = self._finished
        finished[task_id] = None
        if len(finished) > _FINISHED_REMEMBERED:
            del finished[next(iter(finished))]
        reply = encode_reply(kind, body, buffers)
        if self._loop is self._ray_loop:
            self._reply(task_id, reply)
        else:
            assert self._ray_loop is not None
            self._ray_loop.call_soon_threadsafe(self._reply, task_id, reply)

    def _start_own_loop(
        self,
        loop_factory: Callable[[], asyncio.AbstractEventLoop],
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
    ) -> concurrent.futures.Future[None]:
        """Run the runtime on a loop from ``loop_factory``, in a thread of its own, as a local
        child would (the initializer first, on that loop)."""
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def main() -> None:
            try:
                loop = loop_factory()
                if not isinstance(loop, asyncio.AbstractEventLoop):
                    raise TypeError(
                        f"aioexec: loop_factory {loop_factory!r} returned "
                        f"{type(loop).__name__}, not an event loop"
                    )
                asyncio.set_event_loop(loop)
                self._runtime = WorkerRuntime(loop, self._answer)
                if initializer is not None:
                    run_initializer(loop, initializer, initargs)
            except BaseException as exc:
                started.set_exception(exc)
                return
            self._loop = loop
            loop.call_soon(started.set_result, None)
            loop.run_forever()

        threading.Thread(target=main, name="aioexec-actor-loop", daemon=True).start()
        return started

    # -- on the default group's loop --------------------------------------------------------

    def _reply(self, task_id: int, reply: bytes) -> None:
        waiter = self._waiters.pop(task_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)


_actor_class: Any = None


def actor_class() -> Any:
    """``RayWorker`` as a Ray actor class (made once: Ray exports it on first use), for the
    driver."""
    global _actor_class
    if _actor_class is None:
        # Through Any: Ray's stubs (when installed) know no concurrency_groups.
        remote: Any = ray.remote
        _actor_class = remote(
            concurrency_groups={"control": 1, "watch": 1}, max_restarts=0, max_task_retries=0
        )(RayWorker)
    return _actor_class
