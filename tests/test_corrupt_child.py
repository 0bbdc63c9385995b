"""One child's garbage stops that child only (issue 12, items 1 and 2).

A task writes bytes that are not a valid frame into its own child's result pipe (found from
inside the child through ``/proc``, see ``reliability_helpers.result_pipe_candidates``). On
both paths by which answers are read, the manager thread's (tasks submitted from a plain
thread and waited for with ``result()``) and an event loop's lease (tasks awaited with
``ex.run`` from one loop, nothing else waiting), the corrupt child's tasks fail with
``BrokenWorkerError``, the other child's tasks return their results, the executor is not
broken and later work runs.

The garbage: a header of an unknown kind; headers announcing 2**60 and 2**64-1 bytes; and a
well-formed header, for a task id the parent never issued, whose body never comes (the
child's next answers would be swallowed as that body).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
import reliability_helpers as rh
from decoder_access import Kind, raw_header

from aioexec import AsyncProcessExecutor, BrokenWorkerError

NEVER_ISSUED = 2**62 + 12345
GARBAGE = {
    "unknown-kind": raw_header(0x7F, 1, 0) + b"\0" * 32,
    "length-2**60": raw_header(Kind.RESULT, NEVER_ISSUED, 2**60) + b"\0" * 32,
    "length-2**64-1": raw_header(Kind.RESULT, NEVER_ISSUED, 2**64 - 1) + b"\0" * 32,
    "body-never-comes": raw_header(Kind.RESULT, NEVER_ISSUED, 1000),
}
BLOCKERS = 4  # long tasks spread over the two children before the corruption
# The parent reads the garbage as soon as it is written; a hang shows within this bound.
DETECTED_WITHIN = 10.0


@pytest.fixture
def executor() -> Iterator[AsyncProcessExecutor]:
    ex = AsyncProcessExecutor(
        2, mp_context=multiprocessing.get_context("forkserver"), child_concurrency=4
    )
    yield ex
    assert rh.close_bounded(ex, DETECTED_WITHIN), "shutdown(wait=True) hung after the corrupt child"


def _check_outcomes(
    corrupt_outcome: BaseException | object,
    corrupt_pid: int,
    blockers: list[tuple[int, BaseException | object]],
) -> None:
    """The corrupt task and its child's other tasks got BrokenWorkerError; the other child's
    tasks got their own results."""
    assert type(corrupt_outcome) is BrokenWorkerError, repr(corrupt_outcome)
    for index, (pid, outcome) in enumerate(blockers):
        if pid == corrupt_pid:
            assert type(outcome) is BrokenWorkerError, (index, repr(outcome))
        else:
            assert outcome == ("tag", index), (index, repr(outcome))
    assert {pid for pid, _ in blockers} - {corrupt_pid}, "no task ran on the other child"


def _blocker_pids(directory: Path) -> list[int]:
    return [int((directory / f"started-{i}").read_text()) for i in range(BLOCKERS)]


@pytest.mark.parametrize("garbage", list(GARBAGE))
def test_corrupt_child_read_by_the_manager_thread_fails_only_its_own_tasks(
    executor: AsyncProcessExecutor, tmp_path: Path, garbage: str
) -> None:
    ex = executor
    release = str(tmp_path / "release")
    blockers = [
        ex.submit(rh.async_report_pid_then_tag, str(tmp_path), i, release) for i in range(BLOCKERS)
    ]
    assert rh.wait_until(lambda: all((tmp_path / f"started-{i}").exists() for i in range(BLOCKERS)))
    pids = _blocker_pids(tmp_path)
    assert len(set(pids)) == 2, f"the blockers did not spread over both children: {pids}"

    marker = str(tmp_path / "corrupt-pid")
    corrupt = ex.submit(
        rh.async_corrupt_result_pipe, rh.result_pipe_candidates(ex), GARBAGE[garbage], marker
    )
    corrupt_outcome = corrupt.exception(timeout=DETECTED_WITHIN)
    corrupt_pid = int(Path(marker).read_text())
    rh.append_line(release, "go")
    outcomes = []
    for future in blockers:
        error = future.exception(timeout=rh.TIMEOUT)
        outcomes.append(error if error is not None else future.result())
    _check_outcomes(corrupt_outcome, corrupt_pid, list(zip(pids, outcomes, strict=True)))

    # Not broken: later work runs, on fresh children up to max_workers.
    later = [ex.submit(rh.async_tag, i) for i in range(8)]
    assert [f.result(timeout=rh.TIMEOUT) for f in later] == [("tag", i) for i in range(8)]
    assert rh.wait_until_gone([corrupt_pid]) == set(), "the corrupt child was not stopped"


@pytest.mark.parametrize("garbage", list(GARBAGE))
def test_corrupt_child_read_by_an_event_loop_fails_only_its_own_tasks(
    executor: AsyncProcessExecutor, tmp_path: Path, garbage: str
) -> None:
    ex = executor
    release = str(tmp_path / "release")

    async def outcome_of(coro: object, timeout: float = rh.TIMEOUT) -> object:
        try:
            return await asyncio.wait_for(coro, timeout)  # type: ignore[arg-type]
        except (BrokenWorkerError, asyncio.TimeoutError) as exc:  # 3.10: not the builtin
            return exc

    unhandled: list[dict[str, object]] = []

    async def scenario() -> None:
        # The garbage is the executor's business: nothing may reach the loop's handler of
        # unhandled exceptions ("Exception in callback ...").
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: unhandled.append(context)
        )
        # Only this loop waits for answers, so it holds the lease and reads the pipes itself.
        blockers = [
            asyncio.ensure_future(
                outcome_of(ex.run(rh.async_report_pid_then_tag, str(tmp_path), i, release))
            )
            for i in range(BLOCKERS)
        ]
        for i in range(BLOCKERS):
            assert await rh.async_wait_for_path(str(tmp_path / f"started-{i}"))
        pids = _blocker_pids(tmp_path)
        assert len(set(pids)) == 2, f"the blockers did not spread over both children: {pids}"

        marker = str(tmp_path / "corrupt-pid")
        corrupt_outcome = await outcome_of(
            ex.run(
                rh.async_corrupt_result_pipe,
                rh.result_pipe_candidates(ex),
                GARBAGE[garbage],
                marker,
            ),
            DETECTED_WITHIN,
        )
        corrupt_pid = int(Path(marker).read_text())
        rh.append_line(release, "go")
        outcomes = [await b for b in blockers]
        _check_outcomes(corrupt_outcome, corrupt_pid, list(zip(pids, outcomes, strict=True)))

        later = await asyncio.wait_for(
            asyncio.gather(*(ex.run(rh.async_tag, i) for i in range(8))), rh.TIMEOUT
        )
        assert later == [("tag", i) for i in range(8)]
        assert rh.wait_until_gone([corrupt_pid]) == set(), "the corrupt child was not stopped"

    asyncio.run(scenario())
    assert not unhandled, f"reached the event loop's exception handler: {unhandled}"


def test_result_pipe_is_found_from_inside_the_child(
    executor: AsyncProcessExecutor, tmp_path: Path
) -> None:
    """The harness itself: from inside a child, exactly one pipe qualifies as its result pipe
    (nothing is written to it here)."""
    ex = executor
    assert ex.submit(rh.async_getpid).result(timeout=rh.TIMEOUT) in ex._processes
    candidates = rh.result_pipe_candidates(ex)
    found = ex.submit(rh.count_own_result_pipes, candidates).result(timeout=rh.TIMEOUT)
    assert found == 1, (candidates, found)
