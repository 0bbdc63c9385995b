#!/usr/bin/env bash
# The Ray engine's tests: tests/test_contract.py (both engines) and tests/ray_tests, in a venv
# of ONE Python with `.[test,ray]`, inside a network namespace whose only interface is
# loopback (.ci/in-netns.sh: Ray must reach nothing but 127.0.0.1), under a hard time limit.
# Outside such a namespace every Ray case skips, which is why the main pytest runs never start
# Ray. `.ci/run` calls this as one step; it runs alone as well:
#
#   bash .ci/ray-tests.sh [VENV_ROOT] [PYTEST_ARGS...]   # venv: VENV_ROOT/ray-py3.X
#
# Environment (all optional):
#   AIOEXEC_CI_RAY_PYTHON=3.13     the Python (Ray 2.60 has wheels for 3.10-3.14)
#   AIOEXEC_CI_RAY_TIMEOUT=900     hard limit in seconds for the pytest run
#   AIOEXEC_CI_KEEP_VENVS=1        reuse the venv when pyproject.toml and the Python match
# Exit status: pytest's, 124/137 when the limit struck, 98 when the venv or the namespace
# could not be made.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=.ci/venvs.sh
source .ci/venvs.sh

venv_root=${1:-$PWD/.ci/venvs}
(($#)) && shift
v=${AIOEXEC_CI_RAY_PYTHON:-3.13}
venv=$venv_root/ray-py$v
stamp=$venv/.aioexec-stamp

py=$(find_python "$v") || exit 98
want="$("$py" -VV 2>&1 | head -n 1) | test,ray | $(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ ${AIOEXEC_CI_KEEP_VENVS:-0} != 1 || ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
    echo "ray-tests: building $venv from $py with .[test,ray]"
    rm -rf "$venv"
    if ! { "$py" -m venv "$venv" &&
        _ci_pip "$venv/bin/python" -m pip install -q -e ".[test,ray]"; }; then
        echo "ray-tests: the venv with .[test,ray] could not be built" >&2
        exit 98
    fi
    echo "$want" >"$stamp"
fi
if ! bash .ci/in-netns.sh true; then
    echo "ray-tests: cannot create a loopback-only network namespace (unshare)" >&2
    exit 98
fi
"$venv/bin/python" -VV
# SIGINT first (pytest prints its summary and the stacks), SIGKILL 60 s later.
exec timeout --signal=INT --kill-after=60 "${AIOEXEC_CI_RAY_TIMEOUT:-900}" \
    bash .ci/in-netns.sh "$venv/bin/python" -m pytest -p no:cacheprovider \
    tests/test_contract.py tests/ray_tests "$@"
