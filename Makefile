# eldercare-gateway: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_SECONDS ?= 0

.PHONY: test test-fast test-timescaledb lint demo bench system-deps venv lock clean

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

# The storage, ingest, alert and API tests again, on a private server with TimescaleDB
# preloaded (scripts/timescaledb-tree.sh finds it, or builds it from TIMESCALEDB_SRC).
TIMESCALEDB_SRC ?=
TIMESCALEDB_TESTS ?= tests/test_schema.py tests/test_rollups.py tests/test_storage_upkeep.py \
	tests/test_spool.py tests/test_ingest_e2e.py tests/test_ingest_faults.py tests/test_ingest_lifecycle.py \
	tests/test_outages.py tests/test_metrics.py tests/test_alerts.py tests/test_alerts_gateway.py \
	tests/test_alert_worker.py tests/test_outbox.py tests/test_api_alerts.py tests/test_api_auth.py \
	tests/test_api_elders.py tests/test_api_gateway.py tests/test_api_registry.py tests/test_api_scale.py
TIMESCALEDB_SETTINGS := shared_preload_libraries=timescaledb;timescaledb.telemetry_level=off

test-timescaledb: system-deps venv
	@bin=$$(TIMESCALEDB_SRC="$(TIMESCALEDB_SRC)" bash scripts/timescaledb-tree.sh) && \
	echo "TimescaleDB server: $$bin" && \
	ELDERCARE_TEST_PG_BIN="$$bin" ELDERCARE_TEST_PG_SETTINGS="$(TIMESCALEDB_SETTINGS)" \
	$(PY) -m pytest -q $(TIMESCALEDB_TESTS)

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
