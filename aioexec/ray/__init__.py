"""aioexec on Ray: ``AsyncRayExecutor``, the executor's API with Ray async actors as workers.

Ray is an optional extra, imported only here: ``pip install 'aioexec-pool[ray]'``. Without
it, importing this module raises an ``ImportError`` that names the extra.

Modules: ``_executor`` (the class: front + engine), ``_engine`` (the engine interface),
``_pool`` (scheduling state), ``_calls`` (the hot path: calls out, replies in), ``_manager``
(Ray, actors' lives, everything slow), ``_messages``, ``_session`` (``ray.init`` in a thread of
its own), ``_wire`` (request and reply bytes), ``_actor`` (the actor, on the shared worker
runtime).
"""

from __future__ import annotations

try:
    import ray as _ray  # noqa: F401  (Ray itself, not this package: imports are absolute)
except ImportError as exc:
    raise ImportError(
        "aioexec.ray needs Ray, an optional extra: pip install 'aioexec-pool[ray]' "
        f"(ray>=2.60). Importing ray failed: {exc}"
    ) from exc

from ._executor import AsyncRayExecutor

__all__ = ["AsyncRayExecutor"]
