# eldercare-gateway: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_SECONDS ?= 0

.PHONY: test test-timescaledb lint demo bench system-deps venv clean

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
