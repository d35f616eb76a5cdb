# eldercare-gateway: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_SECONDS ?= 0

.PHONY: test lint demo bench system-deps venv clean

system-deps:
	@bash scripts/ensure-system-packages.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

venv: $(STAMP)

test: system-deps venv
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check gateway devices rules simulators tests bench tools
	$(VENV)/bin/mypy

# the demo goes on without root: missing Mosquitto/PostgreSQL get embedded stand-ins (it says so)
demo: venv
	-@bash scripts/ensure-system-packages.sh
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || $(PY) -m pip install -q pgserver
	$(VENV)/bin/eldercare demo --duration $(DEMO_SECONDS)

bench: system-deps venv
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
