"""Shared fixtures: executors that are always torn down, and both start methods.

Functions that tests send to children live in ``tests/helpers.py``: a child imports them by
module name, which it can because the children inherit this process's ``sys.path``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aioexec import AsyncProcessExecutor

START_METHODS = ["forkserver", "spawn"]


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def make_executor(start_method: str) -> Iterator[Callable[..., AsyncProcessExecutor]]:
    """Build executors with the parametrized start method; kill whatever a test left."""
    made: list[AsyncProcessExecutor] = []

    def make(*args: Any, **kwargs: Any) -> AsyncProcessExecutor:
        kwargs.setdefault("mp_context", multiprocessing.get_context(start_method))
        executor = AsyncProcessExecutor(*args, **kwargs)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        close_executor(executor)


@pytest.fixture(scope="module")
def shared_executor() -> Iterator[AsyncProcessExecutor]:
    """One forkserver executor per test module, for tests that leave it healthy."""
    executor = AsyncProcessExecutor(2, mp_context=multiprocessing.get_context("forkserver"))
    yield executor
    close_executor(executor)


@pytest.fixture(scope="module")
def strict_executor() -> Iterator[AsyncProcessExecutor]:
    """One forkserver executor per module with ``fallback="error"``: unpicklable calls fail."""
    executor = AsyncProcessExecutor(
        2, mp_context=multiprocessing.get_context("forkserver"), fallback="error"
    )
    yield executor
    close_executor(executor)


def close_executor(executor: AsyncProcessExecutor, timeout: float = 30) -> None:
    """Kill what a test left running and wait, bounded, for the executor to stop.

    A bounded wait turns a shutdown hang into one failed teardown with a clear message,
    instead of pytest-timeout ending the whole session.
    """
    executor.kill_workers()
    executor.shutdown(wait=False)
    manager = executor._manager
    if manager is not None:
        manager.thread.join(timeout)
        assert not manager.thread.is_alive(), f"executor did not stop within {timeout} s"
    executor.shutdown(wait=True)  # the fallback threads, if any
