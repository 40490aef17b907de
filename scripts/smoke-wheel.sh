#!/usr/bin/env bash
# podplay as `pip install podplay` gives it: build the wheel, install it into a fresh venv, and run
# a smoke suite against that install from a directory outside the checkout. The development venv's
# editable install reads everything from the source tree, so a file the wheel forgets to ship
# (the schemas were one) passes every other test and fails here.
#
#   scripts/smoke-wheel.sh            (run by `make test`, hence by .ci/run)
#
# Dependencies come from the package index (pip's cache makes a second run quick).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PY:-$REPO/.venv/bin/python}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/podplay-smoke.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

step() { printf 'smoke-wheel: %s\n' "$*"; }
quiet() {  # run quietly; show the output only when it fails
    if ! "$@" >"$WORK/log" 2>&1; then cat "$WORK/log" >&2; return 1; fi
}

step "building the wheel"
# From a copy of the files git knows (tracked, or new and not ignored): building in the checkout
# would reuse its build/ directory, where files from an earlier build hide one the wheel lacks.
mkdir "$WORK/src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
        [[ -e $f ]] && printf '%s\0' "$f"
    done | xargs -0 cp --parents -t "$WORK/src"
else  # an unpacked source archive: everything but what builds and venvs leave behind
    tar -c --exclude=./.venv --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ . | tar -x -C "$WORK/src"
fi
# --no-build-isolation would be faster but would hide a build requirement missing from pyproject.
quiet "$PY" -m pip wheel --no-deps -w "$WORK/dist" "$WORK/src"
wheel=$(ls "$WORK"/dist/podplay-*.whl)

# Every data file the package reads at run time must be inside the wheel.
listing=$("$PY" -m zipfile -l "$wheel")
for kind in Pod Deployment ConfigMap Secret PersistentVolumeClaim SOURCE; do
    if ! grep -q "reconciler/schemas/$kind.json" <<<"$listing"; then
        echo "smoke-wheel: $(basename "$wheel") lacks reconciler/schemas/$kind.json" >&2
        exit 1
    fi
done

step "installing it into a fresh venv"
"${PYTHON:-python3}" -m venv "$WORK/venv"  # the interpreter setup.sh makes .venv with
quiet "$WORK/venv/bin/pip" install --disable-pip-version-check "$wheel" pytest

# The tests run from a copy: the checkout must not be on sys.path (pytest puts the rootdir there).
step "running the smoke suite from $WORK/run"
mkdir "$WORK/run"
cp -r "$REPO/tests" "$REPO/manifests" "$WORK/run/"
find "$WORK/run" -name __pycache__ -prune -exec rm -rf {} +
cat >"$WORK/run/pytest.ini" <<'EOF'
[pytest]
addopts = -p no:cacheprovider --strict-markers
markers =
    host: needs root and the real container stack
    slow: takes more than a few seconds
EOF
cd "$WORK/run"
env -u PYTHONPATH PODPLAY_SMOKE_INSTALLED=1 "$WORK/venv/bin/python" -m pytest -q \
    tests/installed \
    tests/unit/cli \
    tests/unit/manifests/test_loader.py \
    tests/unit/manifests/test_schema_cache.py \
    tests/unit/manifests/test_corpus.py
step "ok"
