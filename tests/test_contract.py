"""The executor contract, checked against every engine: ``local`` (``AsyncProcessExecutor``)
always, ``ray`` (``aioexec.ray.AsyncRayExecutor``) inside a loopback-only network namespace
with Ray installed (skipped elsewhere, with the reason; see ``ray_tests/fixtures.py``).

Same API, futures, errors, cancellation, worker deaths, initializers and routing rule: a test
here names the behaviour, never the engine. Functions run in workers come from
``tests/helpers.py`` and ``tests/ray_tests/remote_helpers.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pathlib
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import helpers
import pytest
from ray_tests import remote_helpers as rh

from aioexec import (
    AsyncProcessExecutor,
    BrokenPoolError,
    BrokenWorkerError,
    RemoteError,
    RemoteTraceback,
    TaskTimeout,
    in_child,
)

TIMEOUT = 60
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(params=["local", "ray"])
def make(request: pytest.FixtureRequest) -> Iterator[Callable[..., Executor]]:
    """``make(warm=True, **options)``: an executor of the engine under test, with the options
    both take; ``warm``: return once its workers answer (Ray's actors start in about a second)."""
    if request.param == "ray":
        build: Callable[..., Executor] = request.getfixturevalue("make_ray_executor")
        made: list[Executor] = []
    else:
        from conftest import close_executor

        made = []

        def build(**options: Any) -> Executor:
            return AsyncProcessExecutor(mp_context="forkserver", **options)

    def make(warm: bool = True, **options: Any) -> Executor:
        options.setdefault("max_workers", 2)  # (Ray's default would be the cluster's CPUs)
        executor = build(**options)
        made.append(executor)
        if warm:
            workers = options["max_workers"]
            for future in [executor.submit(helpers.async_double, i) for i in range(workers)]:
                future.result(TIMEOUT)
            if request.param == "ray":  # every actor said hello, not just the first
                helpers.wait_until(
                    lambda: sum(w["ready"] for w in executor._workers()) == workers, TIMEOUT
                )
        return executor

    yield make
    if request.param == "local":
        for executor in made:
            close_executor(executor)  # type: ignore[arg-type]


def no_ray_type_in(error: BaseException | None) -> bool:
    while error is not None:
        module = type(error).__module__
        if module == "ray" or module.startswith("ray."):
            return False
        error = error.__cause__ or error.__context__
    return True


# -- submit, map, run, amap ------------------------------------------------------------------


def test_submit_runs_coroutine_and_plain_functions_in_a_worker(make: Any) -> None:
    ex = make(max_workers=2)
    assert ex.submit(helpers.async_double, 21).result(TIMEOUT) == 42
    assert ex.submit(helpers.double, 4).result(TIMEOUT) == 8
    pids = {ex.submit(helpers.async_pid).result(TIMEOUT), ex.submit(helpers.pid).result(TIMEOUT)}
    assert os.getpid() not in pids
    assert ex.submit(helpers.async_call_record, 1, b=2).result(TIMEOUT)[1:] == ((1,), {"b": 2})


def test_large_bytes_cross_both_ways_intact(make: Any) -> None:
    ex = make()
    data = helpers.deterministic_bytes(3 * 1024 * 1024, seed=7)
    import hashlib

    assert (
        ex.submit(helpers.sha256_hexdigest, data).result(TIMEOUT)
        == hashlib.sha256(data).hexdigest()
    )
    assert ex.submit(helpers.echo, data).result(TIMEOUT) == data


def test_map_yields_in_input_order_with_and_without_chunks(make: Any) -> None:
    ex = make(max_workers=2)
    assert list(ex.map(helpers.async_double, range(20))) == [2 * i for i in range(20)]
    assert list(ex.map(helpers.double, range(20), chunksize=6)) == [2 * i for i in range(20)]
    assert list(ex.map(helpers.async_double, range(50), buffersize=4)) == list(range(0, 100, 2))


def test_run_and_amap_await_results_in_the_callers_loop(make: Any) -> None:
    ex = make(max_workers=2)

    async def main() -> tuple[Any, list[Any], list[Any], Any]:
        one = await ex.run(helpers.async_sleep, 0.01, "slept")
        many = await asyncio.gather(*(ex.run(helpers.async_double, i) for i in range(100)))
        mapped = [r async for r in ex.amap(helpers.double, range(10), chunksize=3)]
        via_loop = await asyncio.get_running_loop().run_in_executor(ex, helpers.async_double, 5)
        return one, many, mapped, via_loop

    one, many, mapped, via_loop = asyncio.run(main())
    assert one == "slept"
    assert many == [2 * i for i in range(100)]
    assert mapped == [2 * i for i in range(10)]
    assert via_loop == 10


def test_futures_work_with_wait_as_completed_and_callbacks(make: Any) -> None:
    ex = make(max_workers=2)
    futures = [ex.submit(helpers.async_sleep, 0.01 * (i % 3), i) for i in range(12)]
    seen: list[int] = []
    called = threading.Event()
    futures[-1].add_done_callback(lambda f: (seen.append(f.result()), called.set()))
    done = {f.result() for f in concurrent.futures.as_completed(futures, timeout=TIMEOUT)}
    assert done == set(range(12))
    assert not concurrent.futures.wait(futures, timeout=TIMEOUT).not_done
    assert called.wait(TIMEOUT)
    assert seen == [11]


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [helpers.raise_value_error, helpers.async_raise_value_error])
def test_task_exception_keeps_its_type_and_remote_traceback(make: Any, fn: Any) -> None:
    ex = make()
    with pytest.raises(ValueError, match="boom") as caught:
        ex.submit(fn, "boom").result(TIMEOUT)
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert fn.__name__ in str(cause)
    assert no_ray_type_in(caught.value)


@pytest.mark.parametrize(
    "fn", [helpers.async_raise_lock_holding_error, helpers.raise_two_argument_error]
)
def test_exception_that_cannot_cross_arrives_as_remote_error(make: Any, fn: Any) -> None:
    ex = make()
    with pytest.raises(RemoteError) as caught:
        ex.submit(fn).result(TIMEOUT)
    assert caught.value.type_name.endswith(("LockHoldingError", "TwoArgumentError"))
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert no_ray_type_in(caught.value)


def test_unpicklable_result_fails_only_its_task(make: Any) -> None:
    ex = make()
    with pytest.raises(TypeError, match="could not be pickled"):
        ex.submit(helpers.return_lock).result(TIMEOUT)
    assert ex.submit(helpers.async_double, 2).result(TIMEOUT) == 4


@pytest.mark.parametrize(
    ("fn", "args", "expected"),
    [
        (rh.raise_base, ("exit",), SystemExit),
        (rh.raise_base, ("interrupt",), KeyboardInterrupt),
        (rh.plain_raise_system_exit, (), SystemExit),
    ],
)
def test_system_exit_in_a_task_reaches_its_future_and_the_worker_goes_on(
    make: Any, fn: Any, args: tuple[Any, ...], expected: type[BaseException]
) -> None:
    ex = make()
    with pytest.raises(expected):
        ex.submit(fn, *args).result(TIMEOUT)
    assert ex.submit(helpers.async_double, 3).result(TIMEOUT) == 6
    assert ex.submit(helpers.double, 3).result(TIMEOUT) == 6


# -- cancellation ----------------------------------------------------------------------------


def test_cancelled_queued_task_never_runs(make: Any, tmp_path: pathlib.Path) -> None:
    ex = make(max_workers=1, child_concurrency=1)
    blocker = ex.submit(rh.hold_until_released, str(tmp_path), "blocker", TIMEOUT)
    helpers.wait_until(lambda: rh.files(tmp_path, "started-blocker"), TIMEOUT)
    queued = ex.submit(rh.sleep_then_mark, str(tmp_path), "queued", 0)
    assert queued.cancel()
    assert queued.cancelled()
    (tmp_path / "release").touch()
    assert blocker.result(TIMEOUT) != os.getpid()
    assert ex.submit(rh.sleep_then_mark, str(tmp_path), "after", 0).result(TIMEOUT) is None
    assert rh.files(tmp_path, "done-") == ["done-after"]


def test_cancelled_running_coroutine_runs_its_finally_in_the_worker(
    make: Any, tmp_path: pathlib.Path
) -> None:
    ex = make()
    future = ex.submit(rh.wait_with_finally, str(tmp_path), "a", 120)
    helpers.wait_until((tmp_path / "started-a").exists, TIMEOUT)
    assert future.cancel()
    assert future.cancelled()
    helpers.wait_until((tmp_path / "finally-a").exists, TIMEOUT)
    assert ex.submit(helpers.async_double, 1).result(TIMEOUT) == 2


def test_awaiting_task_cancelled_by_wait_for_cancels_the_coroutine_in_the_worker(
    make: Any, tmp_path: pathlib.Path
) -> None:
    ex = make()
    record = tmp_path / "finally.txt"

    async def main() -> None:
        call = ex.run(helpers.async_sleep_recording_finally, 60, str(record))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(call, 1)

    asyncio.run(main())
    helpers.wait_until(lambda: record.exists() and record.read_text().endswith("\n"), TIMEOUT)
    assert int(record.read_text().split()[0]) != os.getpid()


def test_running_plain_function_cannot_be_cancelled(make: Any) -> None:
    ex = make()
    future = ex.submit(helpers.sleep, 0.5, "done")
    helpers.wait_until(future.running, TIMEOUT)
    assert not future.cancel()
    assert future.result(TIMEOUT) == "done"


# -- per-call options: timeouts, stoppable plain calls -----------------------------------------


def worker_pids(ex: Any) -> set[int]:
    return {w.pid for w in ex.stats().workers}


def test_a_timeout_cancels_a_coroutine_in_its_worker_with_task_timeout(
    make: Any, tmp_path: pathlib.Path
) -> None:
    ex = make(max_workers=1)
    record = tmp_path / "finally"

    async def main() -> None:
        with pytest.raises(TaskTimeout, match=r"timeout of 0\.3 s"):
            await ex.options(timeout=0.3).run(
                helpers.async_sleep_recording_finally, 60, str(record)
            )

    asyncio.run(main())
    helpers.wait_until(lambda: record.exists() and record.read_text().endswith("\n"), TIMEOUT)
    [pid] = [int(p) for p in record.read_text().split()]
    assert pid in worker_pids(ex)  # only cancelled: its worker stays
    assert ex.options(timeout=30).submit(helpers.double, 3).result(TIMEOUT) == 6


def test_a_timeout_stops_a_plain_call_with_task_timeout_and_its_worker_is_replaced(
    make: Any,
) -> None:
    ex = make(max_workers=1)
    future = ex.options(timeout=0.5).submit(helpers.sleep, 60)
    with pytest.raises(TaskTimeout, match=r"timeout of 0\.5 s"):
        future.result(TIMEOUT)
    helpers.wait_until(lambda: ex.stats().workers_retired == 1, TIMEOUT)
    assert ex.submit(helpers.double, 2).result(TIMEOUT) == 4


def test_cancel_stops_a_running_stoppable_plain_call_which_ran_alone(
    make: Any, tmp_path: pathlib.Path
) -> None:
    ex = make(max_workers=2)
    started = tmp_path / "started"
    neighbour = ex.submit(helpers.async_sleep, 1.0, "untouched")  # goes to the other worker
    stoppable = ex.options(stoppable=True).submit(
        helpers.sleep_recording_finally, 60, str(tmp_path / "finally"), str(started)
    )
    helpers.wait_until(started.exists, TIMEOUT)
    assert stoppable.cancel()
    assert stoppable.cancelled()
    helpers.wait_until(lambda: ex.stats().workers_retired == 1, TIMEOUT)
    assert neighbour.result(TIMEOUT) == "untouched"
    assert ex.submit(helpers.double, 4).result(TIMEOUT) == 8


def test_stats_count_tasks_by_outcome_and_workers_by_how_they_ended(
    make: Any, tmp_path: pathlib.Path
) -> None:
    ex = make(max_workers=2)  # (warm: two tasks done)
    for i in range(3):
        assert ex.submit(helpers.double, i).result(TIMEOUT) == 2 * i
    with pytest.raises(ValueError, match="boom"):
        ex.submit(helpers.raise_value_error, "boom").result(TIMEOUT)
    running = ex.submit(rh.wait_with_finally, str(tmp_path), "c", 60)
    helpers.wait_until((tmp_path / "started-c").exists, TIMEOUT)
    assert running.cancel()
    helpers.wait_until(lambda: ex.stats().tasks_cancelled == 1, TIMEOUT)
    doomed = ex.submit(rh.hold_until_released, str(tmp_path), "d", TIMEOUT)
    helpers.wait_until(lambda: rh.files(tmp_path, "started-d"), TIMEOUT)
    [name] = rh.files(tmp_path, "started-d")
    victim = int(name.rsplit("-", 1)[1])
    os.kill(victim, signal.SIGKILL)
    assert isinstance(doomed.exception(TIMEOUT), BrokenWorkerError)
    assert ex.submit(helpers.double, 5).result(TIMEOUT) == 10  # on a replacement, or not

    stats = ex.stats()
    assert stats.tasks_sent == 9
    assert (stats.tasks_done, stats.tasks_failed, stats.tasks_cancelled) == (6, 2, 1)
    assert stats.workers_lost == 1
    assert stats.workers_started == len(stats.workers) + stats.workers_lost
    assert stats.queued == 0
    assert stats.broken is None
    assert victim not in {w.pid for w in stats.workers}
    for worker in stats.workers:
        assert worker.state in ("starting", "ready", "retiring")
        assert isinstance(worker.worker_id, int)


# -- worker deaths ---------------------------------------------------------------------------


def test_worker_death_fails_only_its_tasks_and_the_executor_goes_on(
    make: Any, tmp_path: pathlib.Path
) -> None:
    ex = make(max_workers=2, child_concurrency=4)
    futures = {
        f"k{i}": ex.submit(rh.hold_until_released, str(tmp_path), f"k{i}", TIMEOUT)
        for i in range(8)
    }
    helpers.wait_until(lambda: len(rh.files(tmp_path, "started-")) == 8, TIMEOUT)
    keys_of: dict[int, list[str]] = {}
    for name in rh.files(tmp_path, "started-"):
        _, key, pid = name.split("-")
        keys_of.setdefault(int(pid), []).append(key)
    assert sorted(len(keys) for keys in keys_of.values()) == [4, 4]
    victim, survivor = sorted(keys_of)
    os.kill(victim, signal.SIGKILL)
    for key in keys_of[victim]:
        with pytest.raises(BrokenWorkerError) as caught:
            futures[key].result(TIMEOUT)
        assert no_ray_type_in(caught.value)
    assert not any(futures[key].done() for key in keys_of[survivor])
    (tmp_path / "release").touch()
    assert {futures[key].result(TIMEOUT) for key in keys_of[survivor]} == {survivor}
    after = {ex.submit(helpers.async_pid).result(TIMEOUT) for _ in range(10)}
    assert victim not in after


# -- initializers ----------------------------------------------------------------------------


@pytest.mark.parametrize("initializer", [helpers.set_init_value, helpers.async_set_init_value])
def test_initializer_runs_in_every_worker_before_its_first_task(
    make: Any, initializer: Any
) -> None:
    ex = make(max_workers=2, initializer=initializer, initargs=("ready",))
    results = [ex.submit(helpers.async_read_init_value, 0.05) for _ in range(8)]
    assert {value for _, value in (f.result(TIMEOUT) for f in results)} == {"ready"}


def test_failing_initializer_breaks_the_executor(make: Any, tmp_path: pathlib.Path) -> None:
    ex = make(warm=False, initializer=helpers.record_pid_then_fail, initargs=(str(tmp_path / "p"),))
    with pytest.raises(BrokenPoolError, match="initializer"):
        ex.submit(helpers.async_double, 1).result(TIMEOUT)
    with pytest.raises(BrokenPoolError):
        ex.submit(helpers.async_double, 1)


# -- schedulers ------------------------------------------------------------------------------


class FirstCandidate:
    """A custom scheduler: always the first candidate; records what it was shown."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def choose(self, candidates: Any) -> Any:
        self.seen += [(c.worker_id, c.in_flight) for c in candidates]
        return candidates[0]


def test_custom_scheduler_sees_worker_ids_and_loads_and_decides(make: Any) -> None:
    scheduler = FirstCandidate()
    ex = make(max_workers=2, scheduler=scheduler)
    pids = {ex.submit(helpers.async_pid).result(TIMEOUT) for _ in range(6)}
    assert len(pids) == 1  # each task, one at a time, went to the first worker with room
    assert {worker_id for worker_id, _ in scheduler.seen} <= {0, 1}
    assert all(isinstance(w, int) and isinstance(n, int) for w, n in scheduler.seen)


def test_round_robin_takes_each_worker_in_turn(make: Any) -> None:
    ex = make(max_workers=2, scheduler="round-robin")
    pids = [ex.submit(helpers.async_pid).result(TIMEOUT) for _ in range(6)]
    assert len(set(pids)) == 2
    assert pids[0::2] == [pids[0]] * 3
    assert pids[1::2] == [pids[1]] * 3


# -- where a call runs (the routing rule) ----------------------------------------------------


def test_as_default_executor_plain_calls_stay_on_threads_and_coroutines_go_to_workers(
    make: Any,
) -> None:
    ex = make()

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ex)
        try:
            return {
                "plain": await loop.run_in_executor(None, helpers.where),
                "coroutine": await loop.run_in_executor(None, helpers.async_where),
                "in_child": await loop.run_in_executor(None, in_child(helpers.where)),
                "to_thread": await asyncio.to_thread(helpers.where),
                "own_api": await ex.run(helpers.where),
            }
        finally:
            loop.set_default_executor(ThreadPoolExecutor(1))  # the loop's close shuts it down

    where = asyncio.run(main())
    here = os.getpid()
    assert where["plain"][0] == here
    assert where["plain"][1].startswith("asyncio")
    assert where["to_thread"][0] == here
    assert where["coroutine"][0] != here
    assert where["in_child"][0] != here
    assert where["own_api"][0] != here


def test_executor_is_a_thread_pool_executor_usable_as_asyncios_default(make: Any) -> None:
    ex = make(warm=False)
    assert isinstance(ex, ThreadPoolExecutor)
    loop = asyncio.new_event_loop()
    try:
        loop.set_default_executor(ex)  # TypeError for anything else since 3.11
    finally:
        loop.set_default_executor(ThreadPoolExecutor(1))
        loop.close()


# -- shutdown --------------------------------------------------------------------------------


def test_shutdown_lets_submitted_work_finish_then_refuses_work(make: Any) -> None:
    ex = make()
    futures = [ex.submit(helpers.async_sleep, 0.2, i) for i in range(5)]
    ex.shutdown(wait=True)
    assert [f.result(0) for f in futures] == list(range(5))
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(helpers.async_double, 1)


@pytest.mark.parametrize("method", ["terminate_workers", "kill_workers"])
def test_terminate_or_kill_workers_fails_running_tasks_and_stops(
    make: Any, tmp_path: pathlib.Path, method: str
) -> None:
    ex = make(max_workers=1, child_concurrency=1)
    running = ex.submit(rh.hold_until_released, str(tmp_path), "r", TIMEOUT)
    helpers.wait_until(lambda: rh.files(tmp_path, "started-r"), TIMEOUT)
    queued = [ex.submit(rh.sleep_then_mark, str(tmp_path), f"q{i}", 0) for i in range(4)]
    getattr(ex, method)()
    with pytest.raises(BrokenWorkerError):
        running.result(TIMEOUT)
    assert all(f.cancelled() for f in queued)
    ex.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(helpers.async_double, 1)


def test_leaving_a_with_block_on_an_exception_cancels_running_coroutines(
    make: Any, tmp_path: pathlib.Path
) -> None:
    ex = make()
    future = ex.submit(rh.wait_with_finally, str(tmp_path), "w", 120)

    def leave_on_an_exception() -> None:
        with ex:
            helpers.wait_until((tmp_path / "started-w").exists, TIMEOUT)
            raise KeyError("leave")

    with pytest.raises(KeyError):
        leave_on_an_exception()
    assert future.cancelled()
    assert (tmp_path / "finally-w").exists()  # the worker confirmed before shutdown returned


def test_shutdown_with_cancel_futures_cancels_queued_work(
    make: Any, tmp_path: pathlib.Path
) -> None:
    ex = make(max_workers=1, child_concurrency=1)
    running = ex.submit(helpers.async_sleep, 0.5, "ran")
    helpers.wait_until(running.running, TIMEOUT)
    queued = [ex.submit(rh.sleep_then_mark, str(tmp_path), f"q{i}", 0) for i in range(5)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert running.result(0) == "ran"
    assert all(f.cancelled() for f in queued)
    assert rh.files(tmp_path, "done-") == []
