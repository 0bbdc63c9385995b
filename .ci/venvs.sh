#!/usr/bin/env bash
# Create (or refresh) one virtualenv per supported Python, with aioexec installed editable.
#
#   bash .ci/venvs.sh                 # .ci/venvs/py3.10 … py3.15, reused when up to date
#   bash .ci/venvs.sh 3.12            # only that one
#   AIOEXEC_CI_FRESH=1 bash .ci/venvs.sh   # delete and rebuild
#
# A venv is "up to date" when its stamp file matches pyproject.toml and the interpreter; the
# package itself is editable, so code changes never need a reinstall. The 3.13 venv also gets
# the `dev` extra (ruff, mypy) and is the one `.ci/run` lints with.
#
# 3.14 and 3.15 come from the Debian root of .ci/debian-root.sh (built on first use): their
# venvs are built and used inside it, where the venv directory (here .ci/venvs) is bound at
# /ci/venvs and the checkout at /src. Their interpreter exists only in the root, so run them
# there, e.g.
#   bash .ci/debian-root.sh run --bind "$PWD/.ci/venvs:/ci/venvs" -- \
#       /ci/venvs/py3.14/bin/python -m pytest
#
# The optional extras (uvloop, cloudpickle) may have no wheel yet for a new Python: the venv
# is then built without the one that fails, a NOTE says so (also when the venv is reused,
# from .aioexec-missing-extras in it), and the tests that need it skip (importorskip).
#
# Sourced by .ci/run for its helpers (find_python, ensure_venv, and through debian-root.sh
# ci_root_python, ci_root_ensure); executed, it builds the venvs.

# shellcheck source=.ci/debian-root.sh
source "$(dirname "${BASH_SOURCE[0]}")/debian-root.sh"

# Supported Pythons, oldest first; AIOEXEC_ROOT_PYTHONS (3.14, 3.15) run in the Debian root.
AIOEXEC_PYTHONS_ALL=(3.10 3.11 3.12 3.13 3.14 3.15)
# The venv that also carries ruff and mypy.
AIOEXEC_LINT_PYTHON=3.13
# Extras installed where they can be (see above); the others must install.
AIOEXEC_OPTIONAL_EXTRAS=(uvloop cloudpickle)

# Run a pip command quietly; drop this machine's pip.conf noise about absent local indexes.
_ci_pip() {
    "$@" --disable-pip-version-check --no-input --progress-bar off 2>&1 |
        { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

# find_python 3.X -> prints the path of a CPython 3.X interpreter, or fails.
# Prefers pyenv's own install dirs (independent of `pyenv global`), then python3.X on PATH.
find_python() {
    local minor=$1 root="" cand="" py
    if command -v pyenv >/dev/null 2>&1; then
        root=$(pyenv root 2>/dev/null || true)
    fi
    root=${root:-${PYENV_ROOT:-$HOME/.pyenv}}
    if [[ -d $root/versions ]]; then
        # Highest 3.X.Y among plain CPython installs (3.10.13, not 3.10-dev or 3.1.5).
        cand=$(find "$root/versions" -mindepth 1 -maxdepth 1 -name "$minor.*" -printf '%f\n' \
            | grep -E "^${minor//./\\.}\.[0-9]+$" | sort -V | tail -n 1 || true)
    fi
    for py in ${cand:+"$root/versions/$cand/bin/python$minor"} "$(command -v "python$minor" || true)"; do
        [[ -n $py && -x $py ]] || continue
        if "$py" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$minor'.split('.'))))" \
            >/dev/null 2>&1; then
            echo "$py"
            return 0
        fi
    done
    echo "ci: no usable python$minor found (looked in $root/versions and PATH)" >&2
    return 1
}

# ensure_venv 3.X DIR FRESH(0|1) -> a venv at DIR with `.[test,uvloop,cloudpickle]`
# (plus `.[dev]` for the lint Python) installed from the repo in the current directory.
ensure_venv() {
    local minor=$1 dir=$2 fresh=$3 py extras required stamp want missing=() extra
    if ci_root_python "$minor" && [[ ${AIOEXEC_CI_IN_ROOT:-0} != 1 ]]; then
        # This same function, in the root, on DIR's parent bound at /ci/venvs.
        [[ -n ${CI_ROOT_STATUS:-} ]] || ci_root_ensure || return 1
        mkdir -p "$(dirname "$dir")" || return 1
        bash "$_CI_ROOT_SCRIPT" run --bind "$(realpath "$(dirname "$dir")"):/ci/venvs" -- \
            bash -c 'set -o pipefail && source .ci/venvs.sh && ensure_venv "$@"' ensure_venv \
            "$minor" "/ci/venvs/$(basename "$dir")" "$fresh"
        return
    fi
    py=$(find_python "$minor") || return 1
    extras="test,uvloop,cloudpickle"
    [[ $minor == "$AIOEXEC_LINT_PYTHON" ]] && extras="$extras,dev"
    want="$("$py" -VV 2>&1 | head -n 1) | $extras | $(sha256sum pyproject.toml | cut -d' ' -f1)"
    stamp="$dir/.aioexec-stamp"
    if [[ $fresh != 1 && -x $dir/bin/python && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
        echo "ci: reusing $dir ($("$dir/bin/python" -V 2>&1))"
        [[ ! -f $dir/.aioexec-missing-extras ]] || cat "$dir/.aioexec-missing-extras"
        return 0
    fi
    echo "ci: building $dir from $py ($("$py" -V 2>&1)) with .[$extras]"
    rm -rf "$dir"
    "$py" -m venv "$dir" || return 1
    _ci_pip "$dir/bin/python" -m pip install -q -U pip || return 1
    if ! _ci_pip "$dir/bin/python" -m pip install -q -e ".[$extras]"; then
        required=$(tr ',' '\n' <<<"$extras" | grep -vxF "${AIOEXEC_OPTIONAL_EXTRAS[@]/#/-e}" |
            paste -sd, -)
        echo "ci: .[$extras] did not install; trying .[$required], then each optional extra"
        _ci_pip "$dir/bin/python" -m pip install -q -e ".[$required]" || return 1
        for extra in "${AIOEXEC_OPTIONAL_EXTRAS[@]}"; do
            _ci_pip "$dir/bin/python" -m pip install -q -e ".[$extra]" || missing+=("$extra")
        done
    fi
    if ((${#missing[@]})); then
        echo "ci: NOTE: Python $minor: extra(s) ${missing[*]} not installable here (no wheel" \
            "for this Python?); the tests that need them skip" | tee "$dir/.aioexec-missing-extras"
    fi
    echo "$want" >"$stamp"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    cd "$(dirname "$0")/.."
    venv_root=${AIOEXEC_CI_VENV_DIR:-$PWD/.ci/venvs}
    if (($#)); then versions=("$@"); else versions=("${AIOEXEC_PYTHONS_ALL[@]}"); fi
    for v in "${versions[@]}"; do
        ensure_venv "$v" "$venv_root/py$v" "${AIOEXEC_CI_FRESH:-0}"
    done
fi
