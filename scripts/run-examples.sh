#!/usr/bin/env bash
# `make run`: the offline demo. Validates the examples and shows the plan `up` would run.
# (Playing them on the real container stack arrives with the runtime and network drivers.)
set -euo pipefail
cd "$(dirname "$0")/.."
PODPLAY=.venv/bin/podplay
EXAMPLES=manifests/examples

echo "== podplay validate $EXAMPLES"
$PODPLAY validate "$EXAMPLES"
echo
echo "== podplay plan $EXAMPLES  (against an empty host)"
tmp=$(mktemp -d /tmp/podplay-run.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
PODPLAY_DRIVER=fake PODPLAY_ROOT="$tmp/root" PODPLAY_RUNROOT="$tmp/run" $PODPLAY plan "$EXAMPLES"
