"""Large payloads cross intact in both directions, and tens of thousands of tiny tasks run."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import helpers
import pytest

from aioexec import AsyncProcessExecutor
from aioexec._worker.codec import OUT_OF_BAND_MIN

MiB = 1024 * 1024
TIMEOUT = 30  # below pytest-timeout (60 s), so that a hang fails this test cleanly


def test_64_mib_result_arrives_intact(shared_executor: AsyncProcessExecutor) -> None:
    result = shared_executor.submit(helpers.deterministic_bytes, 64 * MiB, 7).result(TIMEOUT)
    assert type(result) is bytes
    assert len(result) == 64 * MiB
    expected = hashlib.sha256(helpers.deterministic_bytes(64 * MiB, 7)).hexdigest()
    assert hashlib.sha256(result).hexdigest() == expected


def test_16_mib_argument_arrives_intact(shared_executor: AsyncProcessExecutor) -> None:
    data = helpers.deterministic_bytes(16 * MiB, 11)
    digest = shared_executor.submit(helpers.sha256_hexdigest, data).result(TIMEOUT)
    assert digest == hashlib.sha256(data).hexdigest()


def test_large_payloads_in_both_directions_at_once_stay_separate(
    shared_executor: AsyncProcessExecutor,
) -> None:
    blobs = [helpers.deterministic_bytes(4 * MiB + i, i) for i in range(6)]
    digests = [shared_executor.submit(helpers.sha256_hexdigest, b) for b in blobs]
    echoes = [shared_executor.submit(helpers.deterministic_bytes, 4 * MiB + i, i) for i in range(6)]
    assert [f.result(TIMEOUT) for f in digests] == [hashlib.sha256(b).hexdigest() for b in blobs]
    assert [f.result(TIMEOUT) for f in echoes] == blobs


@pytest.mark.parametrize("fn", [helpers.async_double, helpers.double], ids=["coroutine", "plain"])
def test_50000_tiny_tasks_via_map_with_chunksize(shared_executor: AsyncProcessExecutor, fn) -> None:
    results = shared_executor.map(fn, range(50_000), chunksize=500, timeout=TIMEOUT)
    assert list(results) == [2 * i for i in range(50_000)]


@pytest.mark.parametrize("fn", [helpers.async_double, helpers.double], ids=["coroutine", "plain"])
def test_thousands_of_tiny_tasks_via_plain_map(shared_executor: AsyncProcessExecutor, fn) -> None:
    results = shared_executor.map(fn, range(3000), timeout=TIMEOUT)
    assert list(results) == [2 * i for i in range(3000)]


def test_large_bytes_arguments_and_results_travel_out_of_band_and_stay_bytes(
    shared_executor: AsyncProcessExecutor,
) -> None:
    big = [helpers.deterministic_bytes(OUT_OF_BAND_MIN + i, i) for i in range(3)]
    small = b"small"
    result = shared_executor.submit(
        helpers.async_echo_many, big[0], small, 7, named=big[1], other=big[2]
    ).result(TIMEOUT)
    assert result == (big[0], small, 7, big[1], big[2])
    assert all(type(r) is bytes for r in (result[0], result[3], result[4]))
    single = shared_executor.submit(helpers.echo, big[0]).result(TIMEOUT)
    assert type(single) is bytes
    assert single == big[0]


@pytest.mark.parametrize("start_method", ["forkserver"])
def test_buffers_kept_by_the_receiver_are_not_overwritten_by_later_payloads(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    # A zero-copy object keeps the memory its buffer arrived in. Such a frame must not be
    # read into memory that the next large frame reuses, even when it also carries large
    # bytes (whose own copies would allow reuse). One child: every answer goes through the
    # same decoder.
    executor = make_executor(1)
    first_data = helpers.deterministic_bytes(2 * MiB, 1)
    first = executor.submit(helpers.echo, (helpers.KeepsItsBuffer(first_data), first_data)).result(
        TIMEOUT
    )
    for seed in range(2, 5):
        later = helpers.deterministic_bytes(2 * MiB, seed)
        assert executor.submit(helpers.echo, later).result(TIMEOUT) == later
    kept, copied = first
    assert bytes(kept.data) == first_data
    assert copied == first_data
