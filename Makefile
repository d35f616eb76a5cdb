# eldercare-gateway: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_SECONDS ?= 0

.PHONY: test test-fast lint demo bench system-deps venv lock clean

system-deps:
	@bash scripts/ensure-system-packages.sh

# Every package comes from requirements.lock, hash-checked: a fresh machine builds the program
# that was tested. After changing dependencies in pyproject.toml, run `make lock` and commit both.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

test: system-deps venv
	$(PY) -m pytest -q

# seconds, not minutes: no Debian package step, no browser, no long end-to-end runs (CONTRIBUTING.md)
test-fast: venv
	$(PY) -m pytest -q -m "not slow and not browser"

lock: venv
	$(PY) -m pip install -q uv==0.13.9
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --extra bench --extra demo \
		--generate-hashes --universal --python-version 3.11 -o requirements.lock

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# the demo goes on without root: missing Mosquitto/PostgreSQL get embedded stand-ins (it says so)
demo: venv
	-@bash scripts/ensure-system-packages.sh
	$(VENV)/bin/eldercare-sim demo --duration $(DEMO_SECONDS)

bench: system-deps venv
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
