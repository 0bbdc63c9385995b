"""Large payloads cross intact in both directions, and tens of thousands of tiny tasks run."""

from __future__ import annotations

import hashlib

import helpers
import pytest

from aioexec import AsyncProcessExecutor

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
