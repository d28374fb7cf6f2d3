# zramfs — see README.md. Every target installs what it needs first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test lint typecheck unit demo bench clean

setup:
	bash scripts/setup.sh

test: setup
	$(VENV)/bin/ruff check zramfs tests benchmarks examples
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check zramfs tests benchmarks examples

typecheck: setup
	$(VENV)/bin/mypy

demo: setup
	bash examples/demo.sh

bench: setup
	$(PY) -m benchmarks.side_by_side --size 256M --rounds 3 --out docs/benchmarks.md --plot docs/benchmarks.png
	$(PY) -m benchmarks.core_throughput

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
