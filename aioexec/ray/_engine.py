"""The Ray engine: the ``_front.engine.Engine`` of ``AsyncRayExecutor``.

Neighbours: the front hands calls to :class:`RayEngine`, which pickles them here
(``_worker.codec``), queues them in the ``ActorPool`` and sends those that find a free slot
at once, from the submitting thread (``aioexec.ray._calls``); the manager thread
(``aioexec.ray._manager``) starts on the first task and owns Ray and the actors' lives.

What a call may hold: everything the standard ``pickle`` sends by reference, as for a local
child. A Ray worker cannot import the driver's ``__main__``, and lambdas and nested functions
have no name to import: such calls are sent by value with Ray's own cloudpickle
(``ray.cloudpickle``, which every Ray worker has), whatever ``fallback`` says. ``fallback``
applies to what even cloudpickle cannot send (a lock, a socket).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import ray.cloudpickle

from .._engines import check_open, stop_at_exit
from .._errors import BrokenPoolError
from .._front.engine import EngineFuture, Stats, Task, WaitHook, WorkerOptions
from .._worker.codec import Payload, pickle_call
from ._calls import in_ray_callback
from ._manager import Manager, RayOptions
from ._messages import CancelAll, Shutdown, Terminate
from ._pool import ActorPool

__all__ = ["RayEngine"]


class RayEngine:
    """Ray async actors, each running the worker runtime on its event loop."""

    def __init__(self, options: WorkerOptions, ray_options: RayOptions, name: str) -> None:
        self.options = options
        self._ray_options = ray_options
        self._name = name
        self._pool = ActorPool(options)
        self._lock = threading.Lock()  # starting the manager
        self._manager: Manager | None = None  # started by the first task for a worker
        self._closed = False  # shutdown() was called (written once)
        self._pid = os.getpid()  # a forked copy of this engine refuses work

    # -- the door ---------------------------------------------------------------------------

    def prepare(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        by_value: bool,
    ) -> Payload:
        if not (by_value or _has_no_importable_name(fn)):
            try:
                payload = pickle_call(fn, args, kwargs)
            except Exception:
                pass  # a class of __main__'s in the arguments, say: by value below
            else:
                if b"__main__" not in payload.body:
                    return payload
        return pickle_call(fn, args, kwargs, by_value=True, pickler=ray.cloudpickle)

    def open(self) -> None:
        if self._manager is None:
            with self._lock:
                self._check_usable()
                if self._manager is None:
                    manager = Manager(self._pool, self._ray_options, self._resize, self._name)
                    manager.thread.start()
                    stop_at_exit(self)
                    self._manager = manager
        self._check_usable()

    def submit(self, task: Task) -> None:
        pool = self._pool
        with pool.lock:
            refused = pool.broken is not None or pool.exited
            if not refused:
                pool.queue_for(task).append(task)
                sends = pool.reserve()
        if refused:
            self._refuse(task.future)
            return
        manager = self._manager
        assert manager is not None, "open() first"
        manager.calls.send(sends)

    def cancel(self, future: EngineFuture) -> None:
        if self._manager is not None:
            self._manager.calls.cancel(future)

    def cancel_all(self) -> None:
        if self._manager is not None:
            self._manager.post(CancelAll())

    @property
    def wait_hook(self) -> WaitHook | None:
        return None  # no event loop reads its own answers here: Ray's thread does

    @property
    def broken(self) -> str | None:
        return self._pool.broken

    def in_engine_thread(self) -> bool:
        manager = self._manager
        return in_ray_callback() or (
            manager is not None and threading.current_thread() is manager.thread
        )

    def shutdown(self, cancel_futures: bool) -> None:
        self._closed = True
        if self._manager is not None:
            self._manager.post(Shutdown(cancel_futures))

    def join(self) -> None:
        manager = self._manager
        if manager is not None and threading.current_thread() is not manager.thread:
            manager.thread.join()

    def terminate(self, kill: bool) -> None:
        if self._manager is not None:
            self._manager.post(Terminate(kill))

    def stats(self) -> Stats:
        with self._pool.lock:
            return self._pool.stats()

    # -- helpers ----------------------------------------------------------------------------

    def _check_usable(self) -> None:
        check_open(self._closed, self._pid if os.getpid() != self._pid else 0)

    def _refuse(self, future: EngineFuture) -> None:
        broken = self._pool.broken
        error: BaseException
        if broken is not None:
            error = BrokenPoolError(broken)
        else:
            error = RuntimeError("cannot schedule new futures after shutdown")
        if future.start_running():
            batch = self.options.new_batch()
            batch.error(future, error)
            batch.deliver()

    def _resize(self, size: int) -> None:
        """The cluster's CPU count is known (``max_workers=None``): one actor per CPU."""
        self.options = dataclasses.replace(self.options, max_workers=size)

    @property
    def manager(self) -> Manager | None:
        return self._manager


def _has_no_importable_name(fn: object) -> bool:
    """A lambda, a nested function, or a function of ``__main__``: what no Ray worker can
    import (tried by value at once, rather than after a failed or useless pickle)."""
    return "<" in getattr(fn, "__qualname__", "") or getattr(fn, "__module__", "") == "__main__"
