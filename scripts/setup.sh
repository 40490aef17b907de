#!/usr/bin/env bash
# Idempotent set-up: the Debian packages podplay drives, and the project's virtual environment.
# Quick when everything is already there: apt runs only for missing packages, pip only when
# pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  runc conmon containernetworking-plugins catatonit iproute2 iptables
  golang-github-containers-common            # /usr/share/containers/seccomp.json
  docker-registry skopeo buildah busybox-static   # test registry and third-party image tools
  gpgv gnupg                                  # signedBy signatures: gpgv checks, gpg dearmors (and signs)
  git systemd                                 # git sync; systemd-analyze verifies generated units
  golang-github-opencontainers-specs-dev      # OCI runtime-spec JSON schema (conformance tests)
  golang-github-opencontainers-image-spec-dev # OCI image-spec JSON schemas (conformance tests)
  uidmap slirp4netns passt python3-venv       # rootless: newuidmap/newgidmap, user-mode networking (slirp4netns, pasta), the test user's venv
)
if [ "${PODPLAY_BENCH:-0}" = 1 ]; then PACKAGES+=(podman hyperfine); fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.podplay-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log=$(mktemp)
  # pip and setuptools are chatty on stderr even when all is well: show it only on failure.
  if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[test]'; } >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; exit 1
  fi
  rm -f "$log"
  echo "$want" > "$stamp"
fi
# The schema tests compare reconciler/schemas/ with the generator's output: cache one pinned input for them
# (the kubernetes-validate wheel from PyPI where GitHub's OpenAPI file cannot be had).
.venv/bin/python scripts/gen_schemas.py --fetch
