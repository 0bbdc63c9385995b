"""Tasks awaited in an event loop get asyncio's own future (``aioexec/_future.py``'s
``LoopFuture``): ``run_in_executor`` and ``ex.run`` hand back an asyncio future with no
``concurrent.futures.Future`` behind it, and it behaves as the one ``wrap_future`` would have
made: same results, errors and cancellation, on every failure path too. (``amap`` keeps
concurrent futures, so that an iterator may be carried on in another event loop.)"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import faults
import helpers
import pytest
from test_lease import holds_lease, take_lease

from aioexec import AsyncProcessExecutor, BrokenPoolError, BrokenWorkerError, RemoteTraceback
from aioexec._front.futures import LoopFuture

TIMEOUT = 30.0


def _paths(tmp_path: Path, *names: str) -> list[str]:
    return [str(tmp_path / name) for name in names]


async def _outcome(awaitable: Awaitable[object]) -> object:
    """What awaiting gives: the result, or the exception (SystemExit included)."""
    try:
        return await awaitable
    except BaseException as exc:
        return exc


class _SubclassedLoop(asyncio.SelectorEventLoop):
    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> asyncio.Future[Any]:
        return super().run_in_executor(executor, func, *args)


@pytest.mark.parametrize("loop_class", [asyncio.SelectorEventLoop, _SubclassedLoop])
@pytest.mark.parametrize("fn", [helpers.async_double, helpers.double])
def test_run_in_executor_hands_back_an_asyncio_future_with_nothing_behind_it(
    shared_executor: AsyncProcessExecutor, fn: Callable[[int], object], loop_class: type
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(shared_executor, fn, 21)
        assert isinstance(future, LoopFuture)
        assert future.get_loop() is loop
        assert not isinstance(future, concurrent.futures.Future)
        assert await future == 42
        # submit() called by anyone else still returns a concurrent.futures.Future.
        submitted = shared_executor.submit(fn, 4)
        assert isinstance(submitted, concurrent.futures.Future)
        assert await asyncio.wrap_future(submitted) == 8

    with (
        asyncio.Runner(loop_factory=loop_class)
        if hasattr(asyncio, "Runner")
        else _Runner310(loop_class) as runner
    ):
        runner.run(main())


class _Runner310:
    """``asyncio.Runner`` (3.11+) for Python 3.10."""

    def __init__(self, loop_class: type) -> None:
        self.loop = loop_class()

    def __enter__(self) -> _Runner310:
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.close()

    def run(self, coro: Awaitable[object]) -> object:
        return self.loop.run_until_complete(coro)


def test_ex_run_awaits_a_loop_future_and_amap_works_beside_it(
    shared_executor: AsyncProcessExecutor,
) -> None:
    async def main() -> None:
        assert await shared_executor.run(helpers.async_double, 5) == 10
        results = [r async for r in shared_executor.amap(helpers.double, range(50))]
        assert results == [2 * i for i in range(50)]

    asyncio.run(main())


def test_amap_made_in_one_loop_can_be_iterated_in_another(
    shared_executor: AsyncProcessExecutor,
) -> None:
    async def make() -> AsyncIterator[object]:
        return shared_executor.amap(helpers.async_double, range(10), buffersize=4)

    iterator = asyncio.run(make())

    async def consume() -> list[object]:
        return [r async for r in iterator]

    assert asyncio.run(asyncio.wait_for(consume(), TIMEOUT)) == [2 * i for i in range(10)]


def test_amap_begun_in_one_loop_is_finished_in_another(
    shared_executor: AsyncProcessExecutor,
) -> None:
    iterator = shared_executor.amap(helpers.async_sleep, [0.01] * 12, range(12), buffersize=4)

    async def take(n: int) -> list[object]:
        return [await iterator.__anext__() for _ in range(n)]

    async def rest() -> list[object]:
        return [r async for r in iterator]

    assert asyncio.run(take(5)) == [0, 1, 2, 3, 4]
    assert asyncio.run(asyncio.wait_for(rest(), TIMEOUT)) == list(range(5, 12))


def test_amap_made_outside_a_loop_is_iterated_in_one(shared_executor: AsyncProcessExecutor) -> None:
    iterator = shared_executor.amap(helpers.async_double, range(20), buffersize=4)

    async def consume() -> list[object]:
        return [r async for r in iterator]

    assert asyncio.run(consume()) == [2 * i for i in range(20)]


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_run_in_executor_of_another_threads_loop_does_not_wait_on_a_blocked_lease_loop(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    # A loop that holds the lease (it reads the answers it alone awaits) and then blocks
    # must not hold back the answer of a task awaited by a loop in another thread.
    ex = make_executor(1)
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()

    async def main() -> tuple[bool, object]:
        await take_lease(ex)
        future = other.run_in_executor(ex, helpers.async_sleep, 0.05, "answered")
        lease_kept = holds_lease(ex, asyncio.get_running_loop())

        async def await_it() -> object:
            return await future

        # This loop blocks until the other one has its answer.
        return lease_kept, asyncio.run_coroutine_threadsafe(await_it(), other).result(TIMEOUT)

    try:
        lease_kept, answer = asyncio.run(main())
        assert answer == "answered"
        assert not lease_kept
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(TIMEOUT)
        other.close()


class _InstrumentedLoop(asyncio.SelectorEventLoop):
    made = 0

    def create_future(self) -> asyncio.Future[Any]:
        type(self).made += 1
        return super().create_future()


def test_run_in_executor_of_a_loop_with_its_own_create_future_uses_it(
    shared_executor: AsyncProcessExecutor,
) -> None:
    async def main() -> object:
        future = asyncio.get_running_loop().run_in_executor(shared_executor, faults.identity, 1)
        assert _InstrumentedLoop.made == 1  # by wrap_future, around a concurrent future
        assert not isinstance(future, LoopFuture)
        return await asyncio.wait_for(future, TIMEOUT)

    loop = _InstrumentedLoop()
    try:
        assert loop.run_until_complete(main()) == 1
    finally:
        loop.close()


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_timing_out_on_a_running_plain_function_wakes_the_awaiter_and_it_runs_on(
    make_executor: Callable[..., AsyncProcessExecutor], tmp_path: Path
) -> None:
    # As with wrap_future: the awaiter stops waiting at once; the call cannot be interrupted,
    # so it finishes, its result is dropped, and its slot then serves the next task.
    ex = make_executor(1)
    started, release = _paths(tmp_path, "started", "release")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        remote = loop.run_in_executor(ex, faults.block_until, started, release, "late")
        assert await faults.async_wait_for_path(started, TIMEOUT)
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(remote, 0.2)
        assert time.monotonic() - t0 < TIMEOUT / 2
        assert remote.cancelled()
        after = loop.run_in_executor(ex, faults.identity, "after")
        faults.write_marker(release)
        assert await asyncio.wait_for(after, TIMEOUT) == "after"

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["coroutine", "function"])
@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_cancelled_queued_run_in_executor_task_never_runs(
    make_executor: Callable[..., AsyncProcessExecutor], tmp_path: Path, kind: str
) -> None:
    ex = make_executor(1, child_concurrency=1)
    started, release, ran = _paths(tmp_path, "started", "release", "ran")
    block, mark, identity = (
        (faults.async_block_until, faults.async_mark_run, faults.async_identity)
        if kind == "coroutine"
        else (faults.block_until, faults.mark_run, faults.identity)
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        busy = loop.run_in_executor(ex, block, started, release, "busy")
        assert await faults.async_wait_for_path(started, TIMEOUT)
        queued = loop.run_in_executor(ex, mark, ran)
        behind = loop.run_in_executor(ex, identity, "behind")
        assert queued.cancel()
        faults.write_marker(release)
        assert await asyncio.wait_for(busy, TIMEOUT) == "busy"
        # Dispatch is first in, first out: the task behind it ran, so it was skipped.
        assert await asyncio.wait_for(behind, TIMEOUT) == "behind"
        with pytest.raises(asyncio.CancelledError):
            await queued

    asyncio.run(main())
    assert not Path(ran).exists()


@pytest.mark.parametrize("fn", [faults.raise_error, faults.async_raise_error])
def test_a_task_raising_stopiteration_does_not_leave_its_awaiter_waiting(
    shared_executor: AsyncProcessExecutor, fn: Callable[..., object]
) -> None:
    # asyncio futures refuse StopIteration; wrap_future alone would leave the awaiter hanging.
    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(
            asyncio.gather(
                _outcome(loop.run_in_executor(shared_executor, fn, StopIteration)),
                _outcome(shared_executor.run(fn, StopIteration)),
                _outcome(asyncio.wrap_future(shared_executor.submit(fn, StopIteration))),
            ),
            TIMEOUT,
        )

    direct, run, wrapped = asyncio.run(main())
    if fn is faults.async_raise_error:
        # In a coroutine, PEP 479 already made it a RuntimeError in the child.
        for exc in (direct, run, wrapped):
            assert type(exc) is RuntimeError
        return
    for exc in (direct, run):
        assert type(exc) is RuntimeError
        assert "StopIteration" in str(exc)
        assert type(exc.__cause__) is StopIteration
        assert isinstance(exc.__cause__.__cause__, RemoteTraceback)
    # asyncio's own refusal (TypeError, RuntimeError on 3.13), delivered instead of a hang
    assert isinstance(wrapped, (TypeError, RuntimeError))
    assert "StopIteration" in str(wrapped)
    assert type(shared_executor.submit(fn, StopIteration).exception(TIMEOUT)) is StopIteration


def test_amap_of_a_task_that_raised_stopiteration_before_it_was_awaited_does_not_hang(
    shared_executor: AsyncProcessExecutor,
) -> None:
    iterator = shared_executor.amap(faults.raise_error, [StopIteration])
    (future,) = iterator._fs  # type: ignore[attr-defined]
    concurrent.futures.wait([future], timeout=TIMEOUT)  # answered before anyone awaits it

    async def first() -> object:
        return await _outcome(asyncio.wait_for(iterator.__anext__(), TIMEOUT))

    error = asyncio.run(first())
    assert type(error) is RuntimeError
    assert type(error.__cause__) is StopIteration


@pytest.mark.parametrize(
    "error", [ValueError, KeyError, concurrent.futures.CancelledError, SystemExit]
)
def test_errors_reach_run_in_executor_as_wrap_future_delivers_them(
    shared_executor: AsyncProcessExecutor, error: type[BaseException]
) -> None:
    async def main() -> tuple[object, object]:
        loop = asyncio.get_running_loop()
        direct = loop.run_in_executor(shared_executor, faults.raise_error, error)
        wrapped = asyncio.wrap_future(shared_executor.submit(faults.raise_error, error))
        return await asyncio.wait_for(asyncio.gather(_outcome(direct), _outcome(wrapped)), TIMEOUT)

    direct, wrapped = asyncio.run(main())
    assert type(direct) is type(wrapped)
    assert isinstance(direct, BaseException)
    if not isinstance(direct, asyncio.CancelledError):
        assert isinstance(direct.__cause__, RemoteTraceback)


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_dying_child_fails_only_its_own_awaiters(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    # More tasks than slots: queued work ends the lease, so the manager thread delivers.
    ex = make_executor(2, child_concurrency=2)
    assert ex.submit(helpers.async_double, 1).result(TIMEOUT) == 2

    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        dying = loop.run_in_executor(ex, faults.async_crash)
        others = [loop.run_in_executor(ex, helpers.async_sleep, 0.05, i) for i in range(12)]
        return await asyncio.wait_for(
            asyncio.gather(_outcome(dying), *map(_outcome, others)), TIMEOUT
        )

    first, *rest = asyncio.run(main())
    assert type(first) is BrokenWorkerError
    assert "SIGSEGV" in str(first)
    failed = [outcome for i, outcome in enumerate(rest) if outcome != i]
    # Only a task that ran beside it on its child (one slot left there) may fail with it.
    assert len(failed) <= 1
    assert all(type(outcome) is BrokenWorkerError for outcome in failed)


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_failing_initializer_fails_the_awaiters(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    ex = make_executor(1, initializer=helpers.raise_value_error, initargs=("no init",))

    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        pending = [loop.run_in_executor(ex, helpers.async_double, i) for i in range(3)]
        pending.append(asyncio.ensure_future(ex.run(helpers.double, 3)))
        return await asyncio.wait_for(asyncio.gather(*map(_outcome, pending)), TIMEOUT)

    for outcome in asyncio.run(main()):
        assert type(outcome) is BrokenPoolError
        assert "initializer failed" in str(outcome)


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_a_callback_that_ends_the_manager_thread_leaves_no_awaiter_waiting(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    ex = make_executor(1)

    def end_the_thread(_: Future[object]) -> None:
        raise SystemExit("a callback that ends the thread it runs in")

    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        first = ex.submit(helpers.async_sleep, 0.2, "first")
        first.add_done_callback(end_the_thread)
        others = [loop.run_in_executor(ex, helpers.async_sleep, 0.2, i) for i in range(40)]
        return await asyncio.wait_for(asyncio.gather(*map(_outcome, others)), TIMEOUT)

    for i, outcome in enumerate(asyncio.run(main())):
        assert outcome == i or type(outcome) is BrokenPoolError


def test_loops_in_several_threads_get_their_own_loop_futures(
    shared_executor: AsyncProcessExecutor,
) -> None:
    errors: list[BaseException] = []

    async def one_loop(k: int) -> None:
        loop = asyncio.get_running_loop()
        futures = [
            loop.run_in_executor(shared_executor, helpers.double, k * 100 + i) for i in range(50)
        ]
        assert all(f.get_loop() is loop for f in futures)
        assert await asyncio.gather(*futures) == [2 * (k * 100 + i) for i in range(50)]

    def run(k: int) -> None:
        try:
            asyncio.run(one_loop(k))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_a_debug_mode_loop_runs_plain_functions_through_loop_futures(
    shared_executor: AsyncProcessExecutor,
) -> None:
    async def main() -> object:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(
            loop.run_in_executor(shared_executor, helpers.double, 4), TIMEOUT
        )

    assert asyncio.run(main(), debug=True) == 8
