#!/usr/bin/env bash
# Python 3.14 and 3.15 for CI: a cached minimal Debian "forky" root, entered with chroot.
#
# pyenv here stops at 3.13. Debian testing ("forky") ships python3.14/python3.15 with their
# venv modules and the standard-library tests (libpython3.1X-testsuite, which
# tests/test_conformance.py needs); they need a newer C library than the bookworm host, so
# they run in a root built by `debootstrap --variant=minbase` (see /work/shared/new-pythons.md).
#
#   bash .ci/debian-root.sh ensure     # build the root if it is missing or broken (else reuse)
#   bash .ci/debian-root.sh check      # exit 0 when the root is usable
#   bash .ci/debian-root.sh run [--bind HOST_DIR:ROOT_DIR]... [--] CMD [ARG]...
#                                      # run CMD in the root, in /src = this checkout
#   bash .ci/debian-root.sh run -- bash   # a shell in the root
#
# Sourced (by .ci/venvs.sh) for AIOEXEC_ROOT_PYTHONS and ci_root_python/ci_root_ensure.
#
# Where: AIOEXEC_CI_ROOT (default /var/cache/aioexec-ci/forky-root), about 450 MB; the lock file is
# AIOEXEC_CI_ROOT.lock. Needs root (chroot, mount, unshare) and the debootstrap package, which
# `ensure` installs with apt-get when missing.
#
# Building. The mirror is the one this machine's apt uses, read at run time from
# /etc/apt/sources.list.d/*.sources (URIs:) or /etc/apt/sources.list: no package host is
# written in any file. The bookworm host's debootstrap (1.0.128) has no script for "forky";
# forky is a testing suite like sid, so we pass debootstrap its "sid" script explicitly. The
# Release file of forky is signed by the trixie archive key, which the host's
# debian-archive-keyring (2023.3+deb12u2) already has, so the signature IS checked
# (--keyring=/usr/share/keyrings/debian-archive-keyring.gpg; no --no-check-gpg; should the
# archive move to a key the host lacks, upgrade the host's debian-archive-keyring). The root is
# built in a temporary directory beside its final place, checked, and renamed into place, so
# a half-built root is never used; debootstrap runs in a private mount namespace, so the
# /proc etc. it mounts in the new root cannot outlive it, even when it is killed.
#
# Locking (flock on AIOEXEC_CI_ROOT.lock, every wait bounded): `run` holds a shared lock while
# it uses the root; `ensure` checks under a shared lock and rebuilds under an exclusive one,
# so two CI runs never build at once and a root is never replaced under a run that uses it.
#
# Usable = the stamp file matches this recipe (suite, packages) and every interpreter imports
# test.test_concurrent_futures. Otherwise `ensure` rebuilds from scratch (about a minute here).
#
# Running. `run` enters a private mount namespace (`unshare --mount`), mounts /proc, /dev
# (rbind: multiprocessing needs /dev/shm), a fresh tmpfs on /tmp, the checkout on /src, each
# --bind, and, read-only at their own paths, what pip needs to reach this machine's configured
# package sources: the CA files of SSL_CERT_FILE/SSL_CERT_DIR/REQUESTS_CA_BUNDLE, pip's config
# files and every local path named in them or in a PIP_* variable (find-links, local indexes
# with their parent directory, constraints, PIP_CERT, ...), plus /etc/resolv.conf. The
# environment passes into the root as it is (PIP_*, AIOEXEC_CI_TOKEN, ...), except PATH (the
# root's) and TMPDIR.
# SIGTERM/SIGHUP sent to the runner are passed on to the command; SIGINT reaches it with its
# process group (Ctrl-C, `timeout`). A trap unmounts everything on every exit path (after the
# command ended, failed, or was signalled), and mounts in a private namespace vanish with it
# anyway (even after SIGKILL): nothing shows up in the host's `findmnt`, and two runs at once
# each see only their own mounts.

AIOEXEC_ROOT_PYTHONS=(3.14 3.15)
AIOEXEC_CI_ROOT=${AIOEXEC_CI_ROOT:-/var/cache/aioexec-ci/forky-root}
_CI_ROOT_SUITE=forky
_CI_ROOT_SCRIPT=$(realpath "${BASH_SOURCE[0]}")
# Bounded waits for the lock: a build takes about a minute here, a pytest run up to
# AIOEXEC_CI_PYTEST_TIMEOUT (20 minutes) and `ensure` may wait for runs using a broken root.
_CI_ROOT_LOCK_WAIT=${AIOEXEC_CI_ROOT_LOCK_WAIT:-1800}
_CI_ROOT_BUILD_LIMIT=${AIOEXEC_CI_ROOT_BUILD_LIMIT:-1800}

# ci_root_python 3.X -> success when that Python runs in the root.
ci_root_python() {
    local v
    for v in "${AIOEXEC_ROOT_PYTHONS[@]}"; do
        [[ $v == "$1" ]] && return 0
    done
    return 1
}

_ci_root_packages() {
    local v pkgs=(ca-certificates)
    for v in "${AIOEXEC_ROOT_PYTHONS[@]}"; do
        pkgs+=("python$v" "python$v-venv" "libpython$v-testsuite")
    done
    local IFS=,
    echo "${pkgs[*]}"
}

# What the stamp file of a good root contains.
_ci_root_recipe() { echo "suite=$_CI_ROOT_SUITE variant=minbase packages=$(_ci_root_packages)"; }

_ci_root_mirror() {
    local mirror=""
    if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
        mirror=$(awk '$1 == "URIs:" { print $2; exit }' /etc/apt/sources.list.d/*.sources)
    fi
    if [[ -z $mirror && -f /etc/apt/sources.list ]]; then
        mirror=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { print $i; exit } }' \
            /etc/apt/sources.list)
    fi
    [[ -n $mirror ]] || {
        echo "ci: no Debian mirror in this machine's apt configuration" >&2
        return 1
    }
    echo "$mirror"
}

# _ci_root_ok DIR -> success when DIR is a usable root for this recipe.
_ci_root_ok() {
    local dir=$1 v
    [[ -f $dir/.aioexec-root-stamp && "$(cat "$dir/.aioexec-root-stamp")" == "$(_ci_root_recipe)" ]] ||
        return 1
    for v in "${AIOEXEC_ROOT_PYTHONS[@]}"; do
        timeout 60 chroot "$dir" /usr/bin/env -i PATH=/usr/bin:/bin "python$v" -c \
            'import test.support, test.test_concurrent_futures' >/dev/null 2>&1 || return 1
    done
}

# Build a fresh root at AIOEXEC_CI_ROOT (the caller holds the exclusive lock).
_ci_root_build() {
    local final=$AIOEXEC_CI_ROOT mirror tmp old keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    mirror=$(_ci_root_mirror) || return 1
    if ! command -v debootstrap >/dev/null; then
        echo "ci: installing debootstrap"
        timeout 600 apt-get install -y -q debootstrap >/dev/null 2>&1 ||
            { timeout 600 apt-get update -q >/dev/null &&
                timeout 600 apt-get install -y -q debootstrap >/dev/null; } || return 1
    fi
    # Leftovers of a build that was killed (no other builder runs: we hold the lock).
    # --one-file-system: never follow a mount that a killed debootstrap could have left.
    for old in "$final".build.* "$final".old.*; do
        [[ -e $old ]] && rm -rf --one-file-system "$old"
    done
    tmp=$(mktemp -d "$final.build.XXXXXX") || return 1
    echo "ci: building the Debian $_CI_ROOT_SUITE root in $tmp from $mirror"
    if ! timeout "$_CI_ROOT_BUILD_LIMIT" unshare --mount --propagation private -- \
        debootstrap --variant=minbase --keyring="$keyring" --include="$(_ci_root_packages)" \
        "$_CI_ROOT_SUITE" "$tmp" "$mirror" /usr/share/debootstrap/scripts/sid \
        >"$tmp.log" 2>&1; then
        echo "ci: debootstrap failed; the end of its log:" >&2
        tail -n 30 "$tmp.log" >&2
        rm -rf --one-file-system "$tmp" "$tmp.log"
        return 1
    fi
    rm -f "$tmp.log"
    rm -f "$tmp"/var/cache/apt/archives/*.deb
    mkdir -p "$tmp/src" "$tmp/ci/venvs" "$tmp/ci/reports"
    _ci_root_recipe >"$tmp/.aioexec-root-stamp"
    if ! _ci_root_ok "$tmp"; then
        echo "ci: the new root in $tmp does not work" >&2
        rm -rf --one-file-system "$tmp"
        return 1
    fi
    # Two renames (no rename swaps two directories here), under the exclusive lock: no run
    # uses the root meanwhile.
    if [[ -e $final ]]; then
        old="$final.old.$$"
        mv -T "$final" "$old"
    fi
    mv -T "$tmp" "$final"
    [[ -z ${old:-} ]] || rm -rf --one-file-system "$old"
    echo "ci: Debian root ready: $final ($(du -sh "$final" | cut -f1))"
}

# ci_root_ensure -> a usable root at AIOEXEC_CI_ROOT, built if needed. Sets CI_ROOT_STATUS to
# "reused" or "built" (empty after a failure).
ci_root_ensure() {
    local fd rc=0
    CI_ROOT_STATUS=""
    mkdir -p "$(dirname "$AIOEXEC_CI_ROOT")" || return 1
    exec {fd}>>"$AIOEXEC_CI_ROOT.lock"
    if flock --shared --wait "$_CI_ROOT_LOCK_WAIT" "$fd" && _ci_root_ok "$AIOEXEC_CI_ROOT"; then
        CI_ROOT_STATUS=reused
    elif flock --exclusive --wait "$_CI_ROOT_LOCK_WAIT" "$fd"; then
        # Another run may have built it while we waited.
        if _ci_root_ok "$AIOEXEC_CI_ROOT"; then
            CI_ROOT_STATUS=reused
        else
            if _ci_root_build; then CI_ROOT_STATUS=built; else rc=$?; fi
        fi
    else
        echo "ci: timed out after ${_CI_ROOT_LOCK_WAIT}s waiting for $AIOEXEC_CI_ROOT.lock" >&2
        rc=1
    fi
    exec {fd}>&-
    [[ $CI_ROOT_STATUS == reused ]] && echo "ci: reusing the Debian root $AIOEXEC_CI_ROOT"
    return "$rc"
}

# Host paths that pip in the root needs at the same path: CA files, pip's configuration files
# and every local path named in them or in the PIP_* environment (find-links, local indexes,
# constraints, certificates, ...). One per line.
_ci_root_host_paths() {
    local conf confs=() key path tokens token var
    for var in SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE; do
        [[ -n ${!var:-} ]] && echo "${!var}"
    done
    for conf in "${PIP_CONFIG_FILE:-}" /etc/pip.conf /etc/xdg/pip/pip.conf \
        "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf"; do
        [[ -n $conf && -f $conf ]] && confs+=("$conf") && echo "$conf"
    done
    {
        # "key value..." lines: PIP_FIND_LINKS=... gives "find_links ...".
        for var in $(compgen -e PIP_); do
            key=${var#PIP_}
            echo "${key,,} ${!var}"
        done
        # Settings of the config files, continuation lines included.
        ((${#confs[@]} == 0)) || awk '
            /^\[/ { key = ""; next }
            /^[A-Za-z_-]+[ \t]*[=:]/ {
                key = $0; sub(/[ \t]*[=:].*/, "", key)
                sub(/^[^=:]*[=:]/, "")
            }
            /^[ \t]*$/ { next }
            key != "" { print key, $0 }' "${confs[@]}"
    } | while read -r key tokens; do
        read -r -a tokens <<<"$tokens"
        for token in "${tokens[@]}"; do
            case $token in
                file://*) path=${token#file://} ;;
                /*) path=$token ;;
                *) continue ;;
            esac
            # A local index links to files beside it (.../simple/NAME/ -> ../../files/): bind
            # its parent directory.
            [[ $key == *index* ]] && path=$(dirname "$path")
            echo "$path"
        done
    done
}

# ci_root_run [--bind HOST_DIR:ROOT_DIR]... [--] CMD [ARG]... (see the header)
ci_root_run() {
    local binds=()
    while (($#)); do
        case $1 in
            --bind)
                [[ $2 == /*:/* ]] || {
                    echo "ci: --bind wants HOST_DIR:ROOT_DIR (absolute), not '$2'" >&2
                    return 2
                }
                binds+=("$2")
                shift 2
                ;;
            --) shift && break ;;
            *) break ;;
        esac
    done
    (($#)) || set -- bash
    exec unshare --mount --propagation private -- \
        bash "$_CI_ROOT_SCRIPT" _enter "$PWD" "${#binds[@]}" "${binds[@]}" "$@"
}

# Mount helpers of _ci_root_enter; every mount is recorded for _ci_root_unmount.
_ci_root_mount() { # mount ARGS... TARGET
    mount "$@" && _CI_ROOT_MOUNTED+=("${!#}")
}

# Bind a host path read-only at the same path in the root; the mount point is created in the
# root the first time (a stub that stays).
_ci_root_mount_same() {
    local host=$1 target=$AIOEXEC_CI_ROOT$1
    [[ -e $host ]] || return 0
    if [[ -d $host ]]; then
        mkdir -p "$target"
    else
        mkdir -p "$(dirname "$target")"
        [[ -e $target ]] || : >"$target"
    fi
    _ci_root_mount --bind -o ro "$host" "$target"
}

# Unmount in reverse order; -l because a process the run left behind may still hold a mount
# (the namespace, and so every mount, goes when the last such process is gone).
_ci_root_unmount() {
    local i
    for ((i = ${#_CI_ROOT_MOUNTED[@]} - 1; i >= 0; i--)); do
        umount -R -l "${_CI_ROOT_MOUNTED[i]}" 2>/dev/null ||
            echo "ci: could not unmount ${_CI_ROOT_MOUNTED[i]}" >&2
    done
    _CI_ROOT_MOUNTED=()
}

# Inside the private mount namespace: lock, mount, chroot, unmount.
_ci_root_enter() {
    local src=$1 n=$2 root=$AIOEXEC_CI_ROOT fd rc path dir='' spec target
    shift 2
    local binds=("${@:1:n}")
    shift "$n"
    _CI_ROOT_MOUNTED=()
    trap _ci_root_unmount EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP

    mkdir -p "$(dirname "$root")"
    exec {fd}>>"$root.lock"
    if ! flock --shared --wait "$_CI_ROOT_LOCK_WAIT" "$fd"; then
        echo "ci: timed out after ${_CI_ROOT_LOCK_WAIT}s waiting for $root.lock" >&2
        exit 1
    fi
    if [[ ! -f $root/.aioexec-root-stamp ]]; then
        echo "ci: no Debian root at $root: run 'bash .ci/debian-root.sh ensure' first" >&2
        exit 1
    fi
    _ci_root_mount -t proc proc "$root/proc"
    _ci_root_mount --rbind /dev "$root/dev"
    _ci_root_mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
    _ci_root_mount --bind "$src" "$root/src"
    _ci_root_mount_same /etc/resolv.conf
    while read -r path; do
        # Sorted: a directory comes before the files in it, which it already brings along.
        [[ -n ${dir:-} && $path == "$dir"/* ]] && continue
        _ci_root_mount_same "$path"
        [[ -d $path ]] && dir=$path
    done < <(_ci_root_host_paths | sort -u)
    for spec in "${binds[@]}"; do
        target=$root${spec#*:}
        mkdir -p "$target"
        _ci_root_mount --bind "${spec%%:*}" "$target"
    done
    # The command runs asynchronously, so that a SIGTERM or SIGHUP sent to this shell alone
    # reaches it at once (a foreground command would delay the trap until it ends); with
    # SIGINT and SIGQUIT restored (an asynchronous command would ignore them) and this
    # shell's stdin. SIGINT is not forwarded: Ctrl-C and `timeout` signal the whole process
    # group, the command included, which then ends as it chooses (pytest prints its summary).
    # Whatever the signal, the mounts are undone only after the command has ended. The lock
    # stays with this shell (closed for the command: what it leaves behind must not hold it).
    (
        trap - INT QUIT
        exec chroot "$root" /usr/bin/env -u TMPDIR AIOEXEC_CI_IN_ROOT=1 HOME=/root \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            /bin/bash -c 'cd /src && exec "$@"' ci-root "$@"
    ) 0<&0 {fd}>&- &
    _CI_ROOT_CHILD=$!
    trap : INT
    trap '_ci_root_forward TERM' TERM
    trap '_ci_root_forward HUP' HUP
    # `wait` returns early (status > 128) when a trapped signal arrives: wait again while the
    # command has not ended (a zombie still answers kill -0 until `wait` reaps it).
    while true; do
        rc=0
        wait "$_CI_ROOT_CHILD" || rc=$?
        kill -0 "$_CI_ROOT_CHILD" 2>/dev/null || break
    done
    exit "$rc"
}

_ci_root_forward() { kill -s "$1" "$_CI_ROOT_CHILD" 2>/dev/null || true; }

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    cmd=${1:-}
    shift || true
    case $cmd in
        ensure) ci_root_ensure ;;
        check)
            [[ -f $AIOEXEC_CI_ROOT.lock ]] || exit 1
            exec {lock_fd}>>"$AIOEXEC_CI_ROOT.lock"
            flock --shared --wait "$_CI_ROOT_LOCK_WAIT" "$lock_fd"
            _ci_root_ok "$AIOEXEC_CI_ROOT"
            ;;
        run) ci_root_run "$@" ;;
        _enter) _ci_root_enter "$@" ;;
        *)
            sed -n '2,/^$/p' "$_CI_ROOT_SCRIPT" | sed 's/^# \{0,1\}//'
            [[ $cmd == -h || $cmd == --help ]]
            ;;
    esac
fi
