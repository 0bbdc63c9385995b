"""Coroutine functions and plain functions run in a child process, with args and kwargs;
the child's loop comes from ``loop_factory``; invalid arguments and use after shutdown fail."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable

import helpers
import pytest

from aioexec import AsyncProcessExecutor

TIMEOUT = 30  # seconds: generous bound for any single result on a loaded machine


def test_coroutine_function_runs_in_a_child_with_args_and_kwargs(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    ex = make_executor(2)
    pid, args, kwargs = ex.submit(helpers.async_call_record, 1, "two", key=[3]).result(TIMEOUT)
    assert pid != os.getpid()
    assert args == (1, "two")
    assert kwargs == {"key": [3]}


def test_plain_function_runs_in_a_child_with_args_and_kwargs(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    ex = make_executor(2)
    pid, args, kwargs = ex.submit(helpers.call_record, 1.5, None, a=b"x", b={"c": 1}).result(
        TIMEOUT
    )
    assert pid != os.getpid()
    assert args == (1.5, None)
    assert kwargs == {"a": b"x", "b": {"c": 1}}


def test_run_awaits_a_coroutine_function_in_a_child(
    shared_executor: AsyncProcessExecutor,
) -> None:
    async def main() -> tuple[int, tuple[object, ...], dict[str, object]]:
        call = shared_executor.run(helpers.async_call_record, 7, flag=True)
        return await asyncio.wait_for(call, TIMEOUT)

    pid, args, kwargs = asyncio.run(main())
    assert pid != os.getpid()
    assert (args, kwargs) == ((7,), {"flag": True})


def test_loop_factory_runs_the_child_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    ex = AsyncProcessExecutor(
        1,
        mp_context=multiprocessing.get_context("forkserver"),
        loop_factory=uvloop.new_event_loop,
    )
    try:
        assert ex.submit(helpers.async_running_loop_module).result(TIMEOUT) == "uvloop"
    finally:
        ex.kill_workers()
        ex.shutdown(wait=True)


def test_child_runs_an_asyncio_loop_by_default(shared_executor: AsyncProcessExecutor) -> None:
    module = shared_executor.submit(helpers.async_running_loop_module).result(TIMEOUT)
    assert module.startswith("asyncio")


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_submit_after_shutdown_raises_runtime_error(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    used = make_executor(1)
    assert used.submit(helpers.double, 2).result(TIMEOUT) == 4
    used.shutdown(wait=True)
    never_used = make_executor(1)
    never_used.shutdown(wait=True)
    for ex in (used, never_used):
        with pytest.raises(RuntimeError, match="shutdown"):
            ex.submit(helpers.async_double, 1)
        with pytest.raises(RuntimeError, match="shutdown"):
            ex.submit(helpers.double, 1)


@pytest.mark.parametrize("max_workers", [0, -1])
def test_max_workers_below_one_raises_value_error(max_workers: int) -> None:
    with pytest.raises(ValueError, match="max_workers"):
        AsyncProcessExecutor(max_workers)


@pytest.mark.parametrize("child_concurrency", [0, -3])
def test_child_concurrency_below_one_raises_value_error(child_concurrency: int) -> None:
    with pytest.raises(ValueError, match="child_concurrency"):
        AsyncProcessExecutor(1, child_concurrency=child_concurrency)
