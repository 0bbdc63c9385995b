"""Static checks of the executor's type inference: ``mypy --strict`` must pass on this file.

Each ``assert_type`` fails mypy when the inferred type differs, and each
``# type: ignore[...]`` fails it (``warn_unused_ignores``) when mypy accepts a call it should
reject. Nothing here is meant to run; ``tests/test_type_inference.py`` runs mypy on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future

from typing_extensions import assert_type

from aioexec import AsyncMapIterator, AsyncProcessExecutor, MapIterator


async def coro_fn(x: int) -> int:
    return x


def plain_fn(x: int) -> str:
    return str(x)


async def coro_with_kwargs(x: int, *, label: str) -> bytes:
    return label.encode() * x


def check_submit(ex: AsyncProcessExecutor) -> None:
    assert_type(ex.submit(coro_fn, 1), Future[int])
    assert_type(ex.submit(plain_fn, 1), Future[str])
    assert_type(ex.submit(coro_with_kwargs, 2, label="a"), Future[bytes])
    ex.submit(coro_fn, "not an int")  # type: ignore[call-overload]
    ex.submit(plain_fn)  # type: ignore[call-overload]
    ex.submit(coro_with_kwargs, 2, colour="a")  # type: ignore[call-arg]


def check_map(ex: AsyncProcessExecutor) -> None:
    assert_type(ex.map(coro_fn, [1]), MapIterator[int])
    assert_type(ex.map(plain_fn, [1]), MapIterator[str])
    assert_type(ex.map(coro_fn, [1], timeout=1.0, chunksize=2, buffersize=4), MapIterator[int])
    results: Iterator[int] = ex.map(coro_fn, [1])
    assert_type(len(ex.map(plain_fn, [1])), int)
    del results


def check_amap(ex: AsyncProcessExecutor) -> None:
    assert_type(ex.amap(coro_fn, [1]), AsyncMapIterator[int])
    assert_type(ex.amap(plain_fn, [1]), AsyncMapIterator[str])
    results: AsyncIterator[str] = ex.amap(plain_fn, [1])
    assert_type(len(ex.amap(plain_fn, [1])), int)
    del results


async def check_as_completed(ex: AsyncProcessExecutor) -> None:
    async for done in ex.as_completed([ex.submit(coro_fn, 1), ex.submit(coro_fn, 2)]):
        assert_type(done, Future[int])
        assert_type(done.result(), int)
    async for task in ex.as_completed([ex.run(plain_fn, 1)]):
        assert_type(task, asyncio.Future[str])
    assert_type(len(ex.as_completed([ex.submit(plain_fn, 1)])), int)


async def check_run(ex: AsyncProcessExecutor) -> None:
    assert_type(await ex.run(coro_fn, 1), int)
    assert_type(await ex.run(plain_fn, 1), str)
    assert_type(await ex.run(coro_with_kwargs, 1, label="b"), bytes)
    await ex.run(coro_fn, "not an int")  # type: ignore[call-overload]


async def check_context_managers() -> None:
    with AsyncProcessExecutor(1) as ex:
        assert_type(ex, AsyncProcessExecutor)
    async with AsyncProcessExecutor(1) as aex:
        assert_type(aex, AsyncProcessExecutor)


async def check_in_child(ex: AsyncProcessExecutor) -> None:
    import asyncio

    from aioexec import in_child

    loop = asyncio.get_running_loop()
    assert_type(await loop.run_in_executor(None, in_child(plain_fn), 1), str)
    assert_type(await loop.run_in_executor(ex, in_child(plain_fn), 1), str)
    assert_type(in_child(plain_fn)(1), str)
    await loop.run_in_executor(None, in_child(plain_fn), "x")  # type: ignore[arg-type]
