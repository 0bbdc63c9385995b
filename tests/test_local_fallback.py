"""Work that cannot be pickled: with ``fallback="thread"`` it runs on the executor's own
threads in the parent; with ``fallback="error"`` it fails with a clear message."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading

import helpers
import pytest

from aioexec import AsyncProcessExecutor

TIMEOUT = 30


def _where() -> tuple[int, str]:
    return os.getpid(), threading.current_thread().name


def test_lambda_with_fallback_thread_runs_in_a_parent_thread(
    shared_executor: AsyncProcessExecutor,
) -> None:
    pid, thread_name, value = shared_executor.submit(lambda x: (*_where(), x), 5).result(TIMEOUT)
    assert pid == os.getpid()
    assert thread_name.startswith("asyncio_")
    assert value == 5


def test_local_coroutine_function_with_fallback_thread_is_awaited_in_the_parent(
    shared_executor: AsyncProcessExecutor,
) -> None:
    async def nested(x: int, *, y: int) -> tuple[int, str, int]:
        await asyncio.sleep(0.01)
        return (*_where(), x + y)

    pid, thread_name, total = shared_executor.submit(nested, 1, y=2).result(TIMEOUT)
    assert pid == os.getpid()
    assert thread_name.startswith("asyncio_")
    assert total == 3


def test_module_level_function_still_runs_in_a_child_with_fallback_thread(
    shared_executor: AsyncProcessExecutor,
) -> None:
    assert shared_executor.submit(helpers.pid).result(TIMEOUT) != os.getpid()


def test_lambda_with_fallback_error_fails_with_a_clear_message(
    strict_executor: AsyncProcessExecutor,
) -> None:
    future = strict_executor.submit(lambda: 1)
    exc = future.exception(TIMEOUT)
    assert exc is not None
    message = "\n".join([str(exc), *getattr(exc, "__notes__", [])])
    assert "pickle" in message
    assert "module level" in message
    assert "lambda" in message
    # Only that call failed.
    assert strict_executor.submit(helpers.async_double, 3).result(TIMEOUT) == 6


def test_local_coroutine_function_with_fallback_error_fails_with_a_clear_message(
    strict_executor: AsyncProcessExecutor,
) -> None:
    async def nested() -> int:
        return 1

    exc = strict_executor.submit(nested).exception(TIMEOUT)
    assert exc is not None
    message = "\n".join([str(exc), *getattr(exc, "__notes__", [])])
    assert "pickle" in message
    assert "module level" in message
    assert "nested" in message


def test_lambda_and_nested_coroutine_with_fallback_cloudpickle_run_in_a_child() -> None:
    pytest.importorskip("cloudpickle")  # .ci/run installs the extra, so this runs in CI
    offset = 10

    async def nested(x: int) -> tuple[int, int]:
        await asyncio.sleep(0)
        return os.getpid(), x + offset

    with AsyncProcessExecutor(
        1, mp_context=multiprocessing.get_context("forkserver"), fallback="cloudpickle"
    ) as ex:
        pid, value = ex.submit(lambda x: (os.getpid(), x * 2), 21).result(TIMEOUT)
        assert (pid != os.getpid(), value) == (True, 42)
        pid, value = ex.submit(nested, 1).result(TIMEOUT)
        assert (pid != os.getpid(), value) == (True, 11)
        # An argument even cloudpickle cannot send fails its own future, naming it.
        failed = ex.submit(helpers.double, threading.Lock())
        with pytest.raises(TypeError) as info:
            failed.result(TIMEOUT)
        notes = " ".join(getattr(info.value, "__notes__", []))
        assert "positional argument 0" in notes
        assert "cloudpickle could not send it either" in notes


def test_fallback_cloudpickle_without_cloudpickle_installed_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "cloudpickle" else real_find_spec(name, *a),
    )
    with pytest.raises(ValueError, match="needs the cloudpickle package"):
        AsyncProcessExecutor(1, fallback="cloudpickle")
