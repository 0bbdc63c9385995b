"""Shared fixtures: executors that are always torn down, and both start methods.

Functions that tests send to children live in ``tests/helpers.py``: a child imports them by
module name, which it can because the children inherit this process's ``sys.path``.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# The Ray fixtures, registered here once so that every test module shares one Ray cluster per
# session (they skip outside a loopback-only network namespace, and never import Ray then).
from ray_tests.fixtures import (  # noqa: F401
    make_ray_executor,
    ray_cluster,
    ray_env,
    second_node,
)

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

    Everything runs in a helper thread, even the first call: a deadlocked executor can hold
    the lock that ``shutdown()`` takes, and pytest-timeout does not cover the teardown of a
    test that already failed. A hang becomes one failed teardown with every thread's stack
    on stderr, instead of a stuck session.
    """
    stopped = threading.Event()

    def close() -> None:
        executor.kill_workers()
        thread = executor._executor_manager_thread
        if thread is not None and thread.ident is not None:
            thread.join(timeout)
            if thread.is_alive():
                return
        executor.shutdown(wait=True)  # the fallback threads, if any
        stopped.set()

    threading.Thread(target=close, name="close-executor", daemon=True).start()
    if not stopped.wait(timeout + 5):
        faulthandler.dump_traceback(all_threads=True)
        pytest.fail(f"executor did not stop within {timeout} s (every thread's stack is above)")
