"""The executor the stdlib conformance tests run (see test_conformance.py).

``AsyncProcessExecutor`` configured as ``ProcessPoolExecutor`` behaves: with
``fallback="error"`` a call that cannot be pickled fails its own future, instead of running
on a thread of the parent (aioexec's default, ``fallback="thread"``). Same class name as the
real one, so that the stdlib scripts that import the executor by name can be pointed here.
"""

from __future__ import annotations

from typing import Any

import aioexec


class AsyncProcessExecutor(aioexec.AsyncProcessExecutor):
    def __init__(self, *args: Any, fallback: Any = "error", **kwargs: Any) -> None:
        super().__init__(*args, fallback=fallback, **kwargs)
