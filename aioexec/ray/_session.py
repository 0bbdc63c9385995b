"""This process's use of Ray: joined, or started in a thread that lives as long as it is used.

Neighbours: each ``aioexec.ray._manager.Manager`` acquires the session when its executor
takes its first task, and releases it when the executor has stopped. Nothing else here.

* If Ray is already initialised in this process (``ray.init`` by the application, or by
  another executor), the executor uses it and never shuts it down.
* Otherwise ``ray.init(address, **ray_init_kwargs)`` connects to the cluster at ``address``
  or, with ``address=None``, to the Ray instance of this machine (``RAY_ADDRESS``, then the
  latest cluster started here) or starts a new local one. The last executor to release the
  session calls ``ray.shutdown()``: that disconnects, and stops the processes of a local
  instance this process started, never a cluster it merely joined.
* ``ray.init`` and ``ray.shutdown`` run in one owner thread, alive while the session is held.
  Ray starts its node processes with ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` and Linux sends that
  signal when the *thread* that forked them exits: started from a short-lived thread (a
  submitting thread, a manager thread of one executor), a local Ray died with it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import ray

__all__ = ["SESSION", "RaySession"]


class _Owner:
    """The thread that calls ``ray.init``, waits, and calls ``ray.shutdown``."""

    def __init__(self, address: str | None, init_kwargs: Mapping[str, Any]) -> None:
        self._address = address
        self._init_kwargs = dict(init_kwargs)
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="aioexec-ray-owner", daemon=True)

    def _run(self) -> None:
        try:
            ray.init(address=self._address, **self._init_kwargs)
        except BaseException as exc:
            self._error = exc
            return
        finally:
            self._ready.set()
        self._stop.wait()
        ray.shutdown()

    def wait_ready(self) -> None:
        """Return once Ray is up; raise what ``ray.init`` raised."""
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()


class RaySession:
    """Ray, shared by every executor of the process (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # held while the owner stops, so no one joins a dying Ray
        self._users = 0  # executors holding the session
        self._owner: _Owner | None = None  # set while this process's own Ray is up

    @property
    def started_here(self) -> bool:
        """True while the Ray in use was started (or joined) by ``ray.init`` of ours."""
        return self._owner is not None

    def acquire(self, address: str | None, init_kwargs: Mapping[str, Any]) -> None:
        """Join or start Ray (blocks until it is up); raise what ``ray.init`` raised."""
        with self._lock:
            self._users += 1
            owner = self._owner
            if owner is None and not ray.is_initialized():
                owner = self._owner = _Owner(address, init_kwargs)
                owner.thread.start()
        if owner is None:
            return
        try:
            owner.wait_ready()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """One executor is done with Ray; the last one shuts down the Ray it started."""
        with self._lock:
            self._users -= 1
            if self._users or self._owner is None:
                return
            owner, self._owner = self._owner, None
            owner.stop()


SESSION = RaySession()
