"""A task's outcome whose pickling raises ``SystemExit`` or ``KeyboardInterrupt`` fails only that
task (issue 12, item 5).

The exception a task raises (or the value it returns) is pickled in the child to travel back.
When that pickling raises ``SystemExit``/``KeyboardInterrupt`` (a ``__reduce__`` that calls
``sys.exit()``), only that task's future fails (``ProcessPoolExecutor`` fails only that future
too); the child's other running tasks complete and the child lives on (the next task runs in
the same process). An exception gives ``RemoteError`` naming its type (the contract for an
exception that cannot be pickled); a return value gives what its pickling raised, as any
unpicklable result does (these rows held before the fix, and guard the results path).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
import reliability_helpers as rh

from aioexec import AsyncProcessExecutor, RemoteError


@pytest.fixture
def executor() -> Iterator[AsyncProcessExecutor]:
    # One child, so that "the child's other tasks" and "the same child" are certain.
    ex = AsyncProcessExecutor(
        1, mp_context=multiprocessing.get_context("forkserver"), child_concurrency=4
    )
    yield ex
    assert rh.close_bounded(ex)


FAULTS = {
    "coroutine-raises": rh.async_raise_reduce_raises,
    "function-raises": rh.raise_reduce_raises,
    "coroutine-returns": rh.async_return_reduce_raises,
    "function-returns": rh.return_reduce_raises,
}


@pytest.mark.parametrize("how", ["SystemExit", "KeyboardInterrupt"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_an_outcome_whose_pickling_exits_fails_only_its_task(
    executor: AsyncProcessExecutor, tmp_path: Path, fault: str, how: str
) -> None:
    ex = executor
    pid = ex.submit(rh.async_getpid).result(timeout=rh.TIMEOUT)
    release = str(tmp_path / "release")
    others = [ex.submit(rh.async_report_pid_then_tag, str(tmp_path), i, release) for i in range(2)]
    assert rh.wait_until(lambda: all((tmp_path / f"started-{i}").exists() for i in range(2)))

    error = ex.submit(FAULTS[fault], how).exception(timeout=rh.TIMEOUT)

    rh.append_line(release, "go")
    assert [f.result(timeout=rh.TIMEOUT) for f in others] == [("tag", 0), ("tag", 1)]
    assert ex.submit(rh.async_getpid).result(timeout=rh.TIMEOUT) == pid, "the child died"
    assert ex.submit(rh.getpid).result(timeout=rh.TIMEOUT) == pid, "the child died"
    if fault.endswith("raises"):
        # The design's contract for an exception that cannot be pickled.
        assert isinstance(error, RemoteError), repr(error)
        assert "ReduceRaisesError" in error.type_name, repr(error)
    else:
        # A result that cannot be pickled: the pickling's own exception, as for any other
        # result (and as ProcessPoolExecutor does), or a RemoteError that names it.
        assert isinstance(error, (SystemExit, KeyboardInterrupt, RemoteError)), repr(error)
        assert how in f"{type(error).__name__} {error!r}", repr(error)
