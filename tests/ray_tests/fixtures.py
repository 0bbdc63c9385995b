"""The Ray test harness: a loopback-only guard, one Ray cluster per session, bounded teardown.

Ray runs only inside a private network namespace whose one interface is ``lo`` (``bash
.ci/in-netns.sh python -m pytest tests/test_contract.py tests/ray_tests``); anywhere else, or
without Ray installed, the fixtures below skip the test with the reason, and Ray is never
imported. Inside, one ``ray.cluster_utils.Cluster`` serves the session (a head node; tests add
and remove a second node), with the settings that matter here:

* a short ``RAY_TMPDIR`` (Unix socket paths must stay under 108 characters), removed after;
* ``RAY_AUTH_MODE=disabled`` (else a joining node fails with ``InvalidAuthToken`` and a token
  is written to ``~/.ray``), ``RAY_USAGE_STATS_ENABLED=0``;
* ``tests/`` on ``PYTHONPATH`` before the head node starts, so that every Ray worker imports
  ``helpers`` and ``ray_tests.remote_helpers`` by name, as a local child does;
* fast GCS health checks, so that a lost node is declared dead in about half a second
  instead of tens of seconds.

``tests/conftest.py`` imports these fixtures: registered there once, the session cluster is
shared by ``tests/test_contract.py`` and this package.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

__all__ = [
    "FAST_HEALTH_CHECK",
    "NODE_SLOT",
    "close",
    "make_ray_executor",
    "netns_problem",
    "ray_cluster",
    "ray_env",
    "ray_problem",
    "record_timing",
    "second_node",
]

TESTS = pathlib.Path(__file__).resolve().parent.parent
# Ray 2.60 names (src/ray/common/ray_config_def.h); defaults 5000 / 3000 / 10000 / 5.
FAST_HEALTH_CHECK = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 100,
    "health_check_timeout_ms": 200,
    "health_check_failure_threshold": 3,
}
# One "slot" per node: an executor whose actors each need one lands one actor per node.
NODE_SLOT = "aioexec_test_node_slot"
HOW = "run them with: bash .ci/in-netns.sh python -m pytest tests/test_contract.py tests/ray_tests"


def netns_problem() -> str | None:
    """None inside a loopback-only network namespace, else why Ray must not run here."""
    try:
        lines = pathlib.Path("/proc/self/net/dev").read_text().splitlines()[2:]
    except OSError as exc:
        return f"Ray tests skipped: cannot list network interfaces ({exc}); {HOW}"
    interfaces = sorted(line.split(":", 1)[0].strip() for line in lines if ":" in line)
    if interfaces != ["lo"]:
        return (
            "Ray tests skipped: they run only in a network namespace with only loopback "
            f"(found {', '.join(interfaces)}); {HOW}"
        )
    try:
        with socket.create_server(("127.0.0.1", 0)) as server:
            socket.create_connection(server.getsockname(), timeout=2).close()
    except OSError as exc:
        return f"Ray tests skipped: loopback is not up ({exc}); {HOW}"
    return None


def ray_problem() -> str | None:
    """None when Ray can be imported (without importing it), else why not."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return "Ray tests skipped: ray is not installed; pip install -e '.[test,ray]'"
    return None


def close(executor: Any, timeout: float = 60) -> None:
    """Shut down with cancel_futures=True in a helper thread, so that a hang is one failure."""
    thread = threading.Thread(
        target=executor.shutdown, kwargs={"cancel_futures": True}, daemon=True
    )
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "AsyncRayExecutor.shutdown hung"


def record_timing(name: str, **values: Any) -> None:
    """Print a measured figure (``-s`` shows it); with AIOEXEC_RAY_TIMINGS=FILE also append it
    there as a JSON line."""
    line = json.dumps({"name": name, **values})
    print(f"\nTIMING {line}")
    target = os.environ.get("AIOEXEC_RAY_TIMINGS")
    if target:
        with open(target, "a") as stream:
            stream.write(line + "\n")


@pytest.fixture(scope="session")
def ray_env() -> Iterator[dict[str, str]]:
    """Skip unless safe; set the environment Ray reads (and restore it afterwards)."""
    problem = netns_problem() or ray_problem()
    if problem:
        pytest.skip(problem)
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: socket paths live under it
    saved = dict(os.environ)
    path = [str(TESTS), *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
    os.environ.update(
        RAY_TMPDIR=tmp,
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONPATH=":".join(path),
    )
    os.environ.pop("RAY_ADDRESS", None)
    try:
        yield dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster(ray_env: dict[str, str]) -> Iterator[Any]:
    """A one-node ``Cluster`` (head: 4 CPUs, one node slot), and this process connected to
    it: executors made with ``address=None`` use it (and leave it running)."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 4,
            "resources": {NODE_SLOT: 1},
            "include_dashboard": False,
            "_system_config": FAST_HEALTH_CHECK,
        },
    )
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def second_node(ray_cluster: Any) -> Iterator[Any]:
    """A worker node (2 CPUs, one node slot) for one test; removed if the test did not."""
    node = ray_cluster.add_node(num_cpus=2, resources={NODE_SLOT: 1})
    ray_cluster.wait_for_nodes()
    try:
        yield node
    finally:
        if node in ray_cluster.worker_nodes:
            ray_cluster.remove_node(node)


@pytest.fixture
def make_ray_executor(ray_cluster: Any) -> Iterator[Callable[..., Any]]:
    """Build ``AsyncRayExecutor``s on the session cluster; always shut them down (bounded)."""
    from aioexec.ray import AsyncRayExecutor

    made: list[AsyncRayExecutor] = []

    def make(*args: Any, **kwargs: Any) -> AsyncRayExecutor:
        executor = AsyncRayExecutor(*args, **kwargs)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        close(executor)
