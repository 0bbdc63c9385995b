"""What ``ProcessPoolExecutor`` exposes that code written against it (its own tests among them)
reads: ``_processes``, ``_executor_manager_thread``, ``_call_queue.join_thread()``, ``_broken``.

Neighbours: mixed into ``_executor.AsyncProcessExecutor``; everything here is read from its
``_manager`` (the ``_manager.Manager``), whose thread does the jobs of ProcessPoolExecutor's
two threads.
"""

from __future__ import annotations

import threading
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._manager import Manager

__all__ = ["ProcessPoolAttributes"]


class ProcessPoolAttributes:
    """ProcessPoolExecutor's private attributes, as read-only views of the manager's state."""

    _manager: Manager | None

    @property
    def _processes(self) -> dict[int, BaseProcess]:
        """pid -> process of the live children (a snapshot)."""
        return dict(self._manager.children_snapshot) if self._manager is not None else {}

    @property
    def _executor_manager_thread(self) -> threading.Thread | None:
        """The manager thread (ProcessPoolExecutor's attribute of the same name)."""
        return self._manager.thread if self._manager is not None else None

    @property
    def _call_queue(self) -> _CallQueueView:
        """Compatibility with code that waits for ProcessPoolExecutor's call-queue feeder
        thread: here the manager thread does that job, so ``join_thread()`` joins it."""
        return _CallQueueView(self._executor_manager_thread)

    @property
    def _broken(self) -> str | bool:
        manager = self._manager
        return manager.broken if manager is not None and manager.broken else False


class _CallQueueView:
    def __init__(self, thread: threading.Thread | None) -> None:
        self._thread = thread

    def join_thread(self) -> None:
        if self._thread is not None:
            self._thread.join()
