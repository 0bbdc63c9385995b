#!/usr/bin/env bash
# Run every example in examples/ and check what it printed.
#
#   bash .ci/examples.sh VENV                      # install .[examples] into VENV, run them all
#   bash .ci/examples.sh VENV crawler.py demo.py   # only these
#
# VENV is a virtualenv that already has aioexec installed (e.g. one that .ci/venvs.sh or
# .ci/run built); this script adds the `examples` extra to it with pip, then runs each
# example with that venv's Python under a wall-clock limit. An example fails when it
#   - exits non-zero, or hits the limit (a hang: SIGINT first, for a traceback, then SIGKILL);
#   - does not print the start of every line listed for it in expected_lines (its last line is
#     "<name>: OK", printed only after its own checks passed);
#   - writes a traceback or a warning about leaked resources to stderr, even with exit 0
#     (an exception in a callback, "Task was destroyed but it is pending", ResourceWarning);
#   - leaves a process behind (found by a token in the environment) 10 s after it exited.
# An example in examples/ without an entry in expected_lines fails too, so that a new example
# cannot be skipped by accident.
#
# Environment knobs (all optional):
#   AIOEXEC_EXAMPLES_TIMEOUT=120    limit in seconds for one example
#   AIOEXEC_EXAMPLES_NO_INSTALL=1   do not pip install (the extra is already there)
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=.ci/venvs.sh
source .ci/venvs.sh

if (($# < 1)); then
    echo "usage: bash .ci/examples.sh VENV [EXAMPLE.py ...]" >&2
    exit 2
fi
venv=$1
shift
python=$venv/bin/python
[[ -x $python ]] || { echo "examples: no Python at $python" >&2; exit 2; }
limit=${AIOEXEC_EXAMPLES_TIMEOUT:-120}

# expected_lines NAME -> the lines that example NAME must print, one per line: each must be the
# start of a line of its stdout (what follows, such as a timing, may vary).
expected_lines() {
    case $1 in
        demo.py)
            echo "  caught ValueError: the upstream answered 503"
            echo "  the task awaiting ex.run(long_job) is cancelled: True"
            echo "  all three computed the same 100 results, in order"
            echo "demo: OK"
            ;;
        crawler.py)
            echo "crawled 150 pages, the same in both crawls"
            echo "  links followed: 451; broken: /page/missing"
            echo "crawler: OK"
            ;;
        web_app.py)
            echo 'GET /primes/180000 -> 200 {"n":180000,"primes":16342}'
            echo 'GET /primes/5000001 -> 400 {"error":"n must be at most 5000000"}'
            echo "server stopped; child processes left: 0"
            echo "web_app: OK"
            ;;
        cpu_dropin.py)
            echo "both returned the same 280 results, every run"
            echo "cpu_dropin: OK"
            ;;
        progress.py)
            echo "ex.map:  120 results in input order, sum 59716208"
            echo "ex.amap: 120 results in input order, as ex.map's"
            echo "ex.run + asyncio.as_completed: 120 results, sum 568820"
            echo "progress: OK"
            ;;
        *) return 1 ;;
    esac
}

# Lines of stderr that mean something went wrong even though the example exited 0.
stderr_alarms='Traceback \(most recent call last\)|ResourceWarning|Task was destroyed but it is pending|Task exception was never retrieved|Exception ignored|Unclosed|unclosed'

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONDONTWRITEBYTECODE=1
if [[ ${AIOEXEC_EXAMPLES_NO_INSTALL:-0} != 1 ]]; then
    echo "examples: installing .[examples] into $venv"
    _ci_pip "$python" -m pip install -q -e ".[examples]"
fi
"$python" -VV

if (($#)); then
    names=("$@")
else
    names=()
    for f in examples/*.py; do names+=("$(basename "$f")"); done
fi

# pids of the processes whose environment holds AIOEXEC_EXAMPLES_TOKEN=$1
token_pids() {
    local f pid
    for f in /proc/[0-9]*/environ; do
        pid=${f#/proc/}
        pid=${pid%/environ}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        if tr '\0' '\n' 2>/dev/null <"$f" | grep -qx "AIOEXEC_EXAMPLES_TOKEN=$1"; then
            echo "$pid"
        fi
    done
}

out_dir=$(mktemp -d "${TMPDIR:-/tmp}/aioexec-examples.XXXXXX")
trap 'rm -rf "$out_dir"' EXIT
fg_opt=()
[[ -t 0 ]] && fg_opt=(--foreground)
failures=()
passed=0
failed=0
for name in "${names[@]}"; do
    printf '\n==== examples: %s ====\n' "$name"
    problems=()
    if ! expected=$(expected_lines "$name"); then
        problems+=("no expected output listed for it in .ci/examples.sh")
    fi
    token="$$-$RANDOM-$name"
    start=$SECONDS
    rc=0
    # -W default::ResourceWarning: show leaked files and sockets (hidden by default).
    AIOEXEC_EXAMPLES_TOKEN=$token timeout "${fg_opt[@]}" --signal=INT --kill-after=15 "$limit" \
        "$python" -u -W default::ResourceWarning "examples/$name" \
        >"$out_dir/out" 2>"$out_dir/err" || rc=$?
    elapsed=$((SECONDS - start))
    cat "$out_dir/out"
    # tqdm redraws its bar with carriage returns: one line per redraw reads better in a log.
    tr '\r' '\n' <"$out_dir/err" | grep -v '^[[:space:]]*$' | sed 's/^/[stderr] /' || true
    case $rc in
        0) ;;
        124 | 137) problems+=("hit the ${limit}s limit (exit $rc)") ;;
        *) problems+=("exit code $rc") ;;
    esac
    while IFS= read -r line; do
        [[ -z $line ]] && continue
        awk -v want="$line" 'index($0, want) == 1 { found = 1 } END { exit !found }' \
            "$out_dir/out" || problems+=("did not print: $line")
    done <<<"$expected"
    if grep -qE "$stderr_alarms" "$out_dir/err"; then
        problems+=("stderr: $(grep -m1 -E "$stderr_alarms" "$out_dir/err")")
    fi
    # Children and the forkserver exit soon after their parent: give them 10 s.
    deadline=$((SECONDS + 10))
    while mapfile -t left < <(token_pids "$token") && ((${#left[@]})) && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if ((${#left[@]})); then
        ps -o pid,ppid,etime,args -p "$(IFS=,; echo "${left[*]}")" 2>/dev/null || true
        kill -KILL "${left[@]}" 2>/dev/null || true
        problems+=("left process(es) running: ${left[*]}")
    fi
    if ((${#problems[@]})); then
        for p in "${problems[@]}"; do failures+=("$name: $p"); done
        failed=$((failed + 1))
        echo "examples: FAILED $name (${elapsed}s): ${problems[*]}"
    else
        passed=$((passed + 1))
        echo "examples: passed $name (${elapsed}s)"
    fi
done

printf '\n==== examples: summary ====\n'
if ((${#failures[@]})); then
    printf '  - %s\n' "${failures[@]}"
fi
echo "examples: $passed passed, $failed failed"
((failed == 0))
