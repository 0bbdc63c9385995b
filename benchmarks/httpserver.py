"""A loopback aiohttp server for the HTTP workload, run in its own process.

``python -m benchmarks.httpserver`` binds 127.0.0.1 on a free port, prints ``PORT <n>`` on
stdout, serves ``GET /`` with a small body, and exits when its standard input closes (so it
never outlives the benchmark that started it) or after ``--max-requests`` requests, or after
``--max-seconds``. It only ever listens on the loopback interface.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import threading
from pathlib import Path

BODY = b"x" * 256


async def serve(max_requests: int, max_seconds: float) -> None:
    """Serve until stdin closes, the request budget is spent, or the time is up."""
    from aiohttp import web

    done = asyncio.Event()
    served = 0

    async def handle(_: web.Request) -> web.Response:
        nonlocal served
        served += 1
        if served >= max_requests:
            done.set()
        return web.Response(body=BODY)

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)

    loop = asyncio.get_running_loop()

    def watch_stdin() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the benchmark went away or said stop
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(done.wait(), max_seconds)
    await runner.cleanup()


class ServerProcess:
    """Start the server in a child process; ``url`` once started; ``stop()`` ends it."""

    def __init__(self, max_requests: int = 1_000_000, max_seconds: float = 900.0) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.httpserver",
                "--max-requests",
                str(max_requests),
                "--max-seconds",
                str(max_seconds),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=root,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().split()
        if len(line) != 2 or line[0] != "PORT":
            self.stop()
            raise RuntimeError(f"HTTP server did not start (said {line!r})")
        self.url = f"http://127.0.0.1:{line[1]}/"

    def stop(self) -> None:
        """Close the server's stdin (its signal to exit) and reap it."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    asyncio.run(serve(args.max_requests, args.max_seconds))


if __name__ == "__main__":
    main()
