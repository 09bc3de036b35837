# Developer shortcuts. Everything here is also runnable as the plain command it wraps.
PY ?= .venv/bin/python
PYTEST ?= .venv/bin/pytest

.PHONY: test lint typecheck reliability bench

test:            ## default suite + local-model tests (the README's test command)
	$(PYTEST) -q

lint:
	.venv/bin/ruff check .

typecheck:
	.venv/bin/mypy framework modules optimizers targets cli compat integrations

reliability:     ## faults, crash safety, property-based and load checks, with a summary
	$(PY) tests/reliability/run.py

bench:
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/local_model.py
