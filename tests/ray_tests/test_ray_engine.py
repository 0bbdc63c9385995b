"""What only the Ray engine has to show: Ray's own failure modes and figures.

The contract both engines share is ``tests/test_contract.py``; this module adds throughput on
async actors, cancel storms (``ray.cancel`` is racy: the actor's control group and tombstones
must not lose one), SIGKILL of an actor and loss of a node, Ray's life (joined or started,
and stopped only when started here), the ``loop_factory`` loop, calls sent by value, and
where plain callbacks run. No assertion is on time, except the generous bound the issue
names for 200 sleeps (the fastest of three rounds); figures are printed as ``TIMING`` lines.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import helpers
import pytest

from aioexec import BrokenPoolError, BrokenWorkerError, DeliveryError
from ray_tests import remote_helpers as rh
from ray_tests.fixtures import NODE_SLOT, record_timing

TIMEOUT = 60
pytestmark = pytest.mark.timeout(240)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def started(executor: Any, actors: int) -> None:
    """Start the executor (its first task) and wait until ``actors`` actors said hello."""
    assert executor.submit(rh.async_echo, 0).result(TIMEOUT) == 0
    wait_for(lambda: sum(w["ready"] for w in executor._workers()) == actors, TIMEOUT, "actors")


def idle(executor: Any) -> None:
    """Wait until every call sent has been answered (cancelled ones included)."""
    wait_for(lambda: not any(w["in_flight"] for w in executor._workers()), TIMEOUT, "idle")


def pid_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


# -- throughput ------------------------------------------------------------------------------


def test_sleeps_fill_every_slot_of_every_actor(make_ray_executor: Any) -> None:
    executor = make_ray_executor(2, child_concurrency=50)
    started(executor, 2)
    durations = []
    for _ in range(3):
        start = time.perf_counter()
        futures = [executor.submit(rh.sleep_and_count, 0.1) for _ in range(200)]
        seen = [f.result(TIMEOUT) for f in futures]
        durations.append(round(time.perf_counter() - start, 3))
        assert max(seen) <= 50  # never more than child_concurrency at once in one actor
        assert max(seen) > 10  # and many at once
    record_timing("200 x sleep(0.1), 2 actors x 50 slots", seconds=durations)
    assert min(durations) < 1.5  # the floor is 0.2 s; measured 0.3-0.5 s on 2 busy cores


def test_calls_from_many_threads_at_once_all_arrive(make_ray_executor: Any) -> None:
    executor = make_ray_executor(2, child_concurrency=16)
    results: dict[int, list[Any]] = {}

    def submit_many(n: int) -> None:
        futures = [executor.submit(rh.async_echo, (n, i)) for i in range(200)]
        results[n] = [f.result(TIMEOUT) for f in futures]

    threads = [threading.Thread(target=submit_many, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    assert results == {n: [(n, i) for i in range(200)] for n in range(8)}


# -- cancellation ----------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["at_once", "after_dispatch"])
def test_cancel_storm_lets_no_call_run_to_completion(
    make_ray_executor: Any, tmp_path: pathlib.Path, when: str
) -> None:
    # Each call sleeps 3 s, far longer than a cancel takes to arrive even on a loaded machine:
    # a call that completes is a lost cancel, not a cancel that lost a race with a short sleep.
    executor = make_ray_executor(2, child_concurrency=16)
    started(executor, 2)
    for round_ in range(20):
        futures = [
            executor.submit(rh.sleep_then_mark, str(tmp_path), f"{round_}-{i}", 3.0)
            for i in range(50)
        ]
        if when == "after_dispatch":  # every slot taken: 32 cancels go to the actors
            wait_for(lambda fs=futures: sum(f.running() for f in fs) == 32, 30, "32 sent")
        assert all(f.cancel() for f in futures)
    idle(executor)  # every call sent has answered
    assert rh.files(tmp_path, "done-") == []
    import ray

    stats = [ray.get(w["handle"].stats.remote(), timeout=30) for w in executor._workers()]
    assert all(s["running"] == 0 and s["tombstones"] == 0 for s in stats), stats


def test_cancel_that_overtakes_its_run_leaves_a_tombstone_and_nothing_after(
    make_ray_executor: Any,
) -> None:
    """The actor alone: cancel(id) arriving before run(id) (they travel in different
    concurrency groups, so this order happens) answers run with CANCELLED; a cancel after
    the answer leaves nothing behind."""
    import ray

    from aioexec._worker.codec import pickle_call
    from aioexec._worker.outcome import Answer
    from aioexec.ray._wire import decode_reply, encode_request

    executor = make_ray_executor(1, child_concurrency=2)
    started(executor, 1)
    handle = executor._workers()[0]["handle"]
    first, second = 10**9, 10**9 + 1
    call = pickle_call(rh.async_echo, (1,), {})
    ray.get(handle.cancel.remote(first), timeout=30)  # posted to the runtime's loop first
    cancelled = ray.get(handle.run.remote(encode_request(first, True, call)), timeout=30)
    assert decode_reply(cancelled)[0] == Answer.CANCELLED
    answered = ray.get(handle.run.remote(encode_request(second, True, call)), timeout=30)
    assert decode_reply(answered)[0] == Answer.RESULT
    ray.get(handle.cancel.remote(second), timeout=30)  # late: the call had answered
    assert ray.get(handle.stats.remote(), timeout=30)["tombstones"] == 0


# -- deaths ----------------------------------------------------------------------------------


def test_sigkill_of_one_actor_fails_only_its_calls_and_a_replacement_takes_over(
    make_ray_executor: Any, tmp_path: pathlib.Path
) -> None:
    executor = make_ray_executor(2, child_concurrency=8)
    started(executor, 2)
    futures = {
        f"k{i}": executor.submit(rh.hold_until_released, str(tmp_path), f"k{i}", TIMEOUT)
        for i in range(16)
    }
    wait_for(lambda: len(rh.files(tmp_path, "started-")) == 16, TIMEOUT, "16 calls to start")
    keys_of: dict[int, list[str]] = {}
    for name in rh.files(tmp_path, "started-"):
        _, key, pid = name.split("-")
        keys_of.setdefault(int(pid), []).append(key)
    assert sorted(len(keys) for keys in keys_of.values()) == [8, 8]
    victim, survivor = sorted(keys_of)
    start = time.perf_counter()
    os.kill(victim, signal.SIGKILL)
    for key in keys_of[victim]:
        with pytest.raises(BrokenWorkerError, match="was lost"):
            futures[key].result(TIMEOUT)
    failed_after = time.perf_counter() - start

    def replaced() -> bool:
        ready = [w["pid"] for w in executor._workers() if w["ready"]]
        return len(ready) == 2 and victim not in ready

    wait_for(replaced, TIMEOUT, "a replacement actor")
    replaced_after = time.perf_counter() - start
    (tmp_path / "release").touch()
    assert {futures[key].result(TIMEOUT) for key in keys_of[survivor]} == {survivor}
    # New work spreads over the survivor and the replacement.
    after = [executor.submit(rh.sleep_and_pid, 0.2) for _ in range(16)]
    seen = {f.result(TIMEOUT) for f in after}
    assert victim not in seen
    assert len(seen) == 2
    record_timing(
        "SIGKILL of an actor",
        broken_after=round(failed_after, 3),
        replacement_ready_after=round(replaced_after, 3),
    )


def test_losing_one_node_of_two_fails_only_that_nodes_calls(
    ray_cluster: Any, second_node: Any, make_ray_executor: Any, tmp_path: pathlib.Path
) -> None:
    executor = make_ray_executor(
        2, child_concurrency=4, actor_options={"num_cpus": 0, "resources": {NODE_SLOT: 1}}
    )
    started(executor, 2)
    node_of = {w["pid"]: w["node_id"] for w in executor._workers()}
    assert second_node.node_id in node_of.values()  # one actor per node (one slot per node)
    futures = {
        f"n{i}": executor.submit(rh.hold_until_released, str(tmp_path), f"n{i}", TIMEOUT)
        for i in range(8)
    }
    wait_for(lambda: len(rh.files(tmp_path, "started-")) == 8, TIMEOUT, "8 calls to start")
    lost, kept = [], []
    for name in rh.files(tmp_path, "started-"):
        _, key, pid = name.split("-")
        (lost if node_of[int(pid)] == second_node.node_id else kept).append(key)
    assert len(lost) == len(kept) == 4
    start = time.perf_counter()
    ray_cluster.remove_node(second_node, allow_graceful=False)
    for key in lost:
        with pytest.raises(BrokenWorkerError):
            futures[key].result(TIMEOUT)
    failed_after = time.perf_counter() - start
    assert not any(futures[key].done() for key in kept)
    (tmp_path / "release").touch()
    for key in kept:
        assert node_of[futures[key].result(TIMEOUT)] != second_node.node_id
    # The executor goes on with the actor it has left (its replacement cannot be placed: no
    # node offers a free slot) and new work runs there.
    assert executor.submit(rh.async_echo, "still here").result(TIMEOUT) == "still here"
    record_timing("node lost (its processes killed)", broken_after=round(failed_after, 3))


# -- Ray's life ------------------------------------------------------------------------------


def test_executor_uses_the_running_ray_and_leaves_it_running(make_ray_executor: Any) -> None:
    import ray

    from aioexec.ray._session import SESSION

    executor = make_ray_executor(1)  # address=None
    started(executor, 1)
    pids = [w["pid"] for w in executor._workers()]
    assert not SESSION.started_here
    executor.shutdown()
    assert ray.is_initialized()
    assert ray.get(ray.put(2), timeout=30) == 2
    wait_for(lambda: all(pid_gone(p) for p in pids), TIMEOUT, "the actors to exit")


STARTS_ITS_OWN_RAY = """
import asyncio, json, os, threading, time
import ray
from aioexec.ray import AsyncRayExecutor
from aioexec.ray._session import SESSION


async def defined_in_main(x):  # the actors cannot import this __main__: sent by value
    await asyncio.sleep(0)
    return x * 3


box = {}
def build():
    box["executor"] = AsyncRayExecutor(
        1, ray_init_kwargs={"num_cpus": 1, "include_dashboard": False, "log_to_driver": False}
    )
builder = threading.Thread(target=build)
builder.start()
builder.join()  # the constructing thread is gone before Ray is even up
executor = box["executor"]
start = time.perf_counter()
value = executor.submit(defined_in_main, 5).result(180)
first_call = time.perf_counter() - start
node = ray._private.worker._global_node
pids = [info.process.pid for infos in node.all_processes.values() for info in infos]
pids += [w["pid"] for w in executor._workers()]
started_here = SESSION.started_here
squares = executor.submit(lambda x: x * x, 7).result(60)
start = time.perf_counter()
executor.shutdown()
shutdown = time.perf_counter() - start
def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
deadline = time.monotonic() + 30
while not all(gone(p) for p in pids) and time.monotonic() < deadline:
    time.sleep(0.05)
report = {
    "value": value, "squares": squares, "started_here": started_here,
    "initialized_after": ray.is_initialized(), "processes": len(pids),
    "alive_after": [p for p in pids if not gone(p)],
    "first_call_seconds": first_call, "shutdown_seconds": shutdown,
}

# A second executor starts Ray again and is never shut down: the interpreter's exit must
# stop its actors and its Ray (the test checks that these processes are gone).
left = AsyncRayExecutor(1, ray_init_kwargs={"num_cpus": 1, "include_dashboard": False})
report["left_value"] = left.submit(defined_in_main, 2).result(180)
node = ray._private.worker._global_node
report["left_pids"] = [i.process.pid for infos in node.all_processes.values() for i in infos]
report["left_pids"] += [w["pid"] for w in left._workers()]
slow = left.submit(asyncio.sleep, 0.5, "finished")
print(json.dumps(report), flush=True)
slow.add_done_callback(lambda f: print("at exit:", f.result(), flush=True))
"""


def test_executor_starts_its_own_ray_in_a_thread_of_its_own_and_stops_only_that(
    ray_env: dict[str, str], tmp_path: pathlib.Path
) -> None:
    # A fresh RAY_TMPDIR, short (socket paths): no running cluster to join there.
    own = pathlib.Path(ray_env["RAY_TMPDIR"], "own")
    own.mkdir(exist_ok=True)
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(STARTS_ITS_OWN_RAY))
    done = subprocess.run(
        [sys.executable, str(script)],
        env=dict(ray_env, RAY_TMPDIR=str(own)),
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *_, last, at_exit = done.stdout.strip().splitlines()
    report = json.loads(last)
    assert at_exit == "at exit: finished"  # the exit let the work in flight finish
    assert report["value"] == 15
    assert report["squares"] == 49
    assert report["started_here"]
    assert not report["initialized_after"]
    assert report["processes"] > 1
    assert report["alive_after"] == []
    assert report["left_value"] == 6
    # The interpreter exited without shutdown(): its exit stopped the actors and its Ray.
    wait_for(lambda: all(pid_gone(p) for p in report["left_pids"]), TIMEOUT, "exit cleanup")
    record_timing(
        "executor started its own Ray",
        first_call_seconds=round(report["first_call_seconds"], 2),
        shutdown_seconds=round(report["shutdown_seconds"], 2),
    )


def test_a_collected_executor_stops_its_actors(ray_cluster: Any) -> None:
    import gc

    from aioexec.ray import AsyncRayExecutor

    executor = AsyncRayExecutor(2)
    try:
        started(executor, 2)
        pids = [w["pid"] for w in executor._workers()]
        manager = executor._ray_engine.manager
    except BaseException:
        executor.shutdown(cancel_futures=True)
        raise
    del executor
    gc.collect()
    assert manager is not None
    manager.thread.join(TIMEOUT)
    assert not manager.thread.is_alive()
    wait_for(lambda: all(pid_gone(p) for p in pids), TIMEOUT, "the actors to exit")


# -- calls, loops, callbacks -----------------------------------------------------------------


def test_lambdas_and_closures_are_sent_by_value(make_ray_executor: Any) -> None:
    executor = make_ray_executor(1)
    offset = 10

    async def nested(x: int) -> int:
        return x + offset

    assert executor.submit(lambda: os.getpid()).result(TIMEOUT) != os.getpid()
    assert executor.submit(nested, 5).result(TIMEOUT) == 15


def test_function_the_actors_cannot_import_fails_that_call_only(
    make_ray_executor: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "driver_only_module.py").write_text("async def f():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the driver can import it, the actors cannot
    import driver_only_module  # type: ignore[import-not-found]

    executor = make_ray_executor(1, child_concurrency=2)
    with pytest.raises(DeliveryError) as caught:
        executor.submit(driver_only_module.f).result(TIMEOUT)
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
    assert executor.submit(rh.async_echo, 3).result(TIMEOUT) == 3


def test_loop_factory_makes_the_loop_the_tasks_and_the_initializer_run_on(
    make_ray_executor: Any, tmp_path: pathlib.Path
) -> None:
    executor = make_ray_executor(1, loop_factory=rh.marked_loop, initializer=rh.record_init_loop)
    assert executor.submit(rh.running_loop_class).result(TIMEOUT) == "MarkedLoop"
    assert executor.submit(rh.init_loop).result(TIMEOUT) == "MarkedLoop"
    assert executor.submit(helpers.double, 4).result(TIMEOUT) == 8
    future = executor.submit(rh.wait_with_finally, str(tmp_path), "a", 120)
    wait_for((tmp_path / "started-a").exists, TIMEOUT, "the coroutine to start")
    assert future.cancel()
    wait_for((tmp_path / "finally-a").exists, TIMEOUT, "its finally block")


def test_loop_factory_that_returns_no_loop_breaks_the_executor(make_ray_executor: Any) -> None:
    executor = make_ray_executor(1, loop_factory=rh.not_a_loop)
    with pytest.raises(BrokenPoolError, match="not an event loop"):
        executor.submit(rh.async_echo, 1).result(TIMEOUT)


def test_plain_done_callbacks_run_in_the_manager_thread_not_in_rays(
    make_ray_executor: Any,
) -> None:
    executor = make_ray_executor(1)
    started(executor, 1)
    threads: list[str] = []
    done = threading.Event()
    future = executor.submit(helpers.async_sleep, 0.3, None)

    def record(_: object) -> None:
        threads.append(threading.current_thread().name)
        done.set()

    future.add_done_callback(record)
    assert done.wait(TIMEOUT)
    assert threads[0].startswith("aioexec-ray-"), threads


def test_bad_arguments_fail_at_construction() -> None:
    pytest.importorskip("ray", reason="ray is not installed")
    from aioexec.ray import AsyncRayExecutor

    with pytest.raises(ValueError, match="child_concurrency"):
        AsyncRayExecutor(1, actor_options={"max_concurrency": 3})
    with pytest.raises(ValueError, match="bogus"):  # Ray's own check, at construction
        AsyncRayExecutor(1, actor_options={"bogus": 1})
    with pytest.raises(TypeError, match="initargs"):
        AsyncRayExecutor(1, initializer=print, initargs=5)  # type: ignore[arg-type]
