#!/usr/bin/env bash
# Run a command inside a private network namespace whose only interface is loopback (up).
#
#   bash .ci/in-netns.sh python -m pytest tests/ray_tests
#
# Ray binds and dials many ports; inside this namespace it cannot reach, or be reached from,
# anything but 127.0.0.1. As root: `unshare --net --fork`, then bring `lo` up. As another user:
# `unshare -rn` (a user namespace mapping us to root, so `ip link set lo up` is allowed).
# Before running the command, check that `ip -o link` lists exactly one interface, `lo`, and
# refuse to run otherwise. AIOEXEC_NETNS=1 is exported so tests can see where they run (they
# still check the interfaces themselves: an environment variable proves nothing).
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: $0 COMMAND [ARG...]" >&2
    exit 2
fi

# The part that runs inside the namespace: `lo` up, verify, exec the command.
inner='
set -eu
ip link set lo up
links=$(ip -o link | awk -F": " "{print \$2}" | sed "s/@.*//")
if [ "$links" != "lo" ]; then
    echo "in-netns: expected only lo, found: $(echo $links)" >&2
    exit 97
fi
export AIOEXEC_NETNS=1
exec "$@"
'

if [[ $(id -u) -eq 0 ]]; then
    exec unshare --net --fork -- sh -c "$inner" in-netns "$@"
else
    exec unshare -rn --fork -- sh -c "$inner" in-netns "$@"
fi
