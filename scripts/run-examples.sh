#!/usr/bin/env bash
# `make run`: the offline demo. Makes localhost/busybox:latest from the host's busybox, plays
# every manifest in manifests/examples/ on the real stack, shows them working, converges again
# (nothing to do), then takes them down. KEEP=1 leaves them running.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then exec sudo --preserve-env=PODPLAY_ROOT,PODPLAY_RUNROOT,PODPLAY_NETWORK_DIR,KEEP "$0" "$@"; fi
PODPLAY=.venv/bin/podplay
EXAMPLES=manifests/examples
get() { .venv/bin/python -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

tmp=$(mktemp -d /tmp/podplay-run.XXXXXX)
cleanup() {
    [ "${KEEP:-0}" = 1 ] || $PODPLAY down --volumes "$EXAMPLES" || true
    rm -rf "$tmp"
}
trap cleanup EXIT

step "podplay import: localhost/busybox:latest from $(command -v busybox)"
scripts/busybox-rootfs.sh "$tmp/rootfs.tar"
$PODPLAY import -q -c 'CMD ["sh"]' "$tmp/rootfs.tar" localhost/busybox:latest
$PODPLAY images

step "podplay validate $EXAMPLES"
$PODPLAY validate "$EXAMPLES"

step "podplay plan $EXAMPLES"
$PODPLAY plan "$EXAMPLES"

step "podplay up --wait $EXAMPLES"
$PODPLAY up --wait "$EXAMPLES"

step "podplay pods / podplay ps"
$PODPLAY pods
$PODPLAY ps

step "hello-web: the ConfigMap's page on 127.0.0.1:18080"
get http://127.0.0.1:18080/

step "sidecar-demo: the init container's line and the writer's dates, served by the reader on :19000"
sleep 3
get http://127.0.0.1:19000/log.txt | head -4

step "counter: each replica on its own port (18100+N), a Secret mounted, a counter on the claim"
get http://127.0.0.1:18100/
get http://127.0.0.1:18101/

step "guestbook: web → api (two replicas behind a ClusterIP) → db, by Service names; web's NodePort on 127.0.0.1:30080"
$PODPLAY services
for _ in 1 2 3; do get http://127.0.0.1:30080/cgi-bin/index; done

step "podplay logs hello-web"
$PODPLAY logs hello-web

step "podplay up again: nothing changed, nothing touched"
$PODPLAY up "$EXAMPLES"

if [ "${KEEP:-0}" = 1 ]; then
    step "KEEP=1: the examples keep running; remove them with: $PODPLAY down --volumes $EXAMPLES"
else
    step "podplay down --volumes $EXAMPLES"
fi
