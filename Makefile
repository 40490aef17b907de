# The README's two commands: `make run` and `make test`. Both do their own set-up.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup run test lint unit bench clean

setup:
	@./scripts/setup.sh

run: setup
	@./scripts/run-examples.sh

lint: setup
	$(VENV)/bin/ruff check reconciler tests conformance benchmarks scripts
	$(VENV)/bin/lint-imports --no-logo

test: setup lint
	$(PY) -m pytest -n auto --durations=25 -q $(PYTEST_ARGS)
	PY=$(PY) ./scripts/smoke-wheel.sh

unit: setup
	$(PY) -m pytest -n auto -q tests/unit tests/engine conformance $(PYTEST_ARGS)

bench: setup
	PODPLAY_BENCH=1 ./scripts/setup.sh
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
