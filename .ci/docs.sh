#!/usr/bin/env bash
# Build the documentation site as CI does: `mkdocs build --strict` into a temporary directory
# (removed afterwards). --strict turns every warning into a failure: a broken link or anchor,
# a page missing from the nav, an API name mkdocstrings cannot resolve.
#
#   bash .ci/docs.sh                              # the python3 on PATH, with the docs extra
#   bash .ci/docs.sh .ci/venvs/py3.13/bin/python  # another interpreter
#   AIOEXEC_DOCS_SITE=DIR bash .ci/docs.sh        # keep the built site in DIR
#
# The docs extra: pip install -e '.[docs]'. Then also check that no page makes a reader's
# browser fetch anything from elsewhere (scripts, styles, images, fonts).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${1:-python3}
if ! "$python" -c "import material, mkdocs, mkdocstrings_handlers.python" 2>/dev/null; then
    echo "docs: $python has no mkdocs-material or mkdocstrings[python]: pip install -e '.[docs]'" >&2
    exit 1
fi

site=${AIOEXEC_DOCS_SITE:-}
if [[ -z $site ]]; then
    site=$(mktemp -d "${TMPDIR:-/tmp}/aioexec-docs.XXXXXX")
    trap 'rm -rf "$site"' EXIT
fi

export NO_MKDOCS_2_WARNING=1 # mkdocs-material's banner about its successor
start=$SECONDS
"$python" -m mkdocs build --strict --site-dir "$site"

# Links to elsewhere (<a href>) are fine; resources that a browser loads by itself are not.
remote='<(script|img|link|iframe|source|video|audio)[^>]*[[:space:]](src|href)="(https?:)?//'
if grep -rlE "$remote" --include='*.html' "$site"; then
    echo "docs: the pages above load a resource from another host" >&2
    exit 1
fi
echo "docs: built with --strict in $((SECONDS - start)) s"
