"""What ``benchmarks/ray_vs_raw.py`` runs on Ray: a trivial coroutine for the engine, and the
raw Ray async actor it is compared with. Ray workers import this module by name (the
benchmark puts the repository root on ``PYTHONPATH`` before Ray starts)."""

from __future__ import annotations

import os


async def echo(value: object) -> object:
    return value


class RawActor:
    """The baseline: a plain Ray async actor, called as ``await actor.echo.remote(x)``."""

    async def echo(self, value: object) -> object:
        return value

    def pid(self) -> int:
        return os.getpid()
