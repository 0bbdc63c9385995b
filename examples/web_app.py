"""A Starlette app whose CPU-heavy route runs in child processes.

Run it with ``python examples/web_app.py`` (needs ``pip install -e '.[examples]'``; a few
seconds; no network). The script starts the app with uvicorn on 127.0.0.1 (a port the
system picks) inside its own event loop, sends it a few requests with aiohttp's client,
prints the answers and stops the server. To serve it yourself instead::

    uvicorn --app-dir examples web_app:app        # then open /primes/200000 on port 8000

What it shows:

* the executor belongs to the app's *lifespan*: it is created when the server starts and
  shut down (children stopped) when the server stops, and routes reach it through
  ``request.state.executor``;
* the CPU-heavy route does ``await executor.run(count_primes, n)``: the work runs in a child
  process, so the server's event loop stays free for other requests meanwhile (the script
  times a ``/ping`` sent while four CPU-heavy requests are being computed);
* ``count_primes`` is a plain function at module level: the executor's own API (``run``,
  ``submit``, ``map``, ``amap``) and ``loop.run_in_executor(executor, ...)`` with an explicit
  executor always send it to a child.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import socket
import time
from collections.abc import AsyncIterator
from typing import TypedDict

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from aioexec import AsyncProcessExecutor

MAX_N = 5_000_000  # the largest n the route accepts: bounded work per request


def count_primes(n: int) -> int:
    """Primes below ``n`` by trial division: deliberately slow, pure-Python CPU work."""
    count = 0
    for candidate in range(2, n):
        for divisor in range(2, math.isqrt(candidate) + 1):
            if candidate % divisor == 0:
                break
        else:
            count += 1
    return count


class State(TypedDict):
    executor: AsyncProcessExecutor


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[State]:
    # One executor for the app's lifetime. Leaving the `async with` (server shutdown) waits
    # for the children to exit without blocking the event loop.
    async with AsyncProcessExecutor() as executor:
        yield {"executor": executor}


async def primes(request: Request) -> JSONResponse:
    n = request.path_params["n"]
    if n > MAX_N:
        return JSONResponse({"error": f"n must be at most {MAX_N}"}, status_code=400)
    executor: AsyncProcessExecutor = request.state.executor
    count = await executor.run(count_primes, n)  # computed in a child process
    return JSONResponse({"n": n, "primes": count})


async def ping(request: Request) -> PlainTextResponse:
    return PlainTextResponse("pong")


app = Starlette(
    routes=[Route("/primes/{n:int}", primes), Route("/ping", ping)],
    lifespan=lifespan,
)


# ------------------------------------------------------------------- the demonstration


@contextlib.asynccontextmanager
async def running_server() -> AsyncIterator[str]:
    """Run ``app`` with uvicorn in this event loop on 127.0.0.1; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # loopback only, a port the system picks
    host, port = sock.getsockname()
    config = uvicorn.Config(app, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        # uvicorn offers no event for "listening": poll its flag, bounded in time.
        deadline = time.monotonic() + 30
        while not server.started:
            if serving.done():
                serving.result()  # raises what stopped the server
                raise RuntimeError("uvicorn stopped before it started")
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start within 30 s")
            await asyncio.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True  # lifespan shutdown: the executor's children exit
        await serving
        sock.close()


async def main() -> None:
    async with running_server() as base, aiohttp.ClientSession(base) as client:
        print(f"uvicorn serves the app on {base}, the executor in its lifespan")

        async def get(path: str) -> str:
            start = time.perf_counter()
            async with client.get(path) as response:
                body = await response.text()
            elapsed = time.perf_counter() - start
            return f"GET {path} -> {response.status} {body}  ({elapsed * 1000:.0f} ms)"

        print(await get("/primes/100"), "<- the first request also starts a child")

        sizes = [150_000, 160_000, 170_000, 180_000]
        print("four CPU-heavy requests at once, and a /ping while they run:")
        heavy = [asyncio.create_task(get(f"/primes/{n}")) for n in sizes]
        try:
            await asyncio.sleep(0.05)  # let them reach the server first (demo pacing)
            pong = await get("/ping")
            pending = sum(not task.done() for task in heavy)
            print(f"{pong} <- while {pending} of the 4 were still being computed")
            for line in await asyncio.gather(*heavy):
                print(line)
        finally:  # on an error or Ctrl-C, no request task is left behind
            for task in heavy:
                task.cancel()
            await asyncio.gather(*heavy, return_exceptions=True)

        print(await get(f"/primes/{MAX_N + 1}"))
    # The lifespan ended with the server: the executor is shut down, its children gone.
    left = multiprocessing.active_children()
    print(f"server stopped; child processes left: {len(left)}")
    if left:
        raise SystemExit(f"web_app: children still running after shutdown: {left}")
    print("web_app: OK")


if __name__ == "__main__":  # required: the children import this module
    asyncio.run(main())
