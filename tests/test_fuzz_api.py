"""The HTTP API of the running gateway under schemathesis: no 5xx, responses as /openapi.json says.

The real gateway (``GatewayRunner``) with a registry and an open SOS alert; an admin
logs in with ``eldercare users``; every operation in ``/openapi.json`` is called with
cases schemathesis generates from the document (valid and invalid), signed in as that
admin. Excluded: ``/api/events`` (a stream that does not end) and ``/api/logout`` (it
would end the session the other cases use).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.support import REPO, GatewayRunner, Publisher, query, wait_until
from tests.test_api_helpers import ELDERS, PASSWORD, RESPONDERS

pytestmark = pytest.mark.slow

EXCLUDED = ("/api/events", "/api/logout")
PER_OPERATION = settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def test_every_api_operation_answers_without_5xx_and_as_documented(
    gateway: GatewayRunner, publisher: Publisher, database: str, tmp_path: Path
) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({"elders": ELDERS, "responders": RESPONDERS}, allow_unicode=True))
    gw = gateway.start(registry={"file": str(registry)})
    base = f"http://127.0.0.1:{gw.http_port}"
    added = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "-c",
            str(gateway.workdir / "config.yaml"),
            "users",
            "add",
            "fuzz",
            "--role",
            "admin",
            "--password-stdin",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        input=PASSWORD + "\n",
        check=False,
    )
    assert added.returncode == 0, added.stderr
    publisher.publish("eldercare/v1/pager/pg-1/event", json.dumps({"ts": time.time_ns() // 1_000_000, "event": "sos"}))
    wait_until(lambda: query(database, "SELECT count(*) FROM alerts")[0][0] >= 1, what="an alert to look at")
    login = httpx.post(f"{base}/api/login", json={"username": "fuzz", "password": PASSWORD}, timeout=10)
    assert login.status_code == 200, login.text
    auth = {"Authorization": f"Bearer {login.json()['token']}"}

    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the API documents no operation"
    failures: list[str] = []
    statuses: dict[int, int] = {}
    checked = 0
    for operation in operations:
        if operation.path in EXCLUDED:
            continue
        checked += 1

        @PER_OPERATION
        @given(case=operation.as_strategy())
        def call(case: schemathesis.Case) -> None:
            response = case.call_and_validate(
                base_url=base,
                headers=auth,
                timeout=10,
                checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        try:
            call()
        except (Exception, BaseExceptionGroup) as error:  # collect every operation's failures, report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {str(error)[:2000]}")
    assert checked >= 10, f"only {checked} operations documented"
    assert sum(n for status, n in statuses.items() if status < 300) >= checked, statuses  # not all refused
    print(f"{checked} operations, statuses {dict(sorted(statuses.items()))}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("path", EXCLUDED)
def test_the_excluded_operations_exist(path: str) -> None:
    """If one is renamed, the exclusion above must follow (or the stream would hang the fuzz run)."""
    api = REPO / "gateway" / "api"
    assert path in (api / "routes.py").read_text() + (api / "CONTRACT.md").read_text()
