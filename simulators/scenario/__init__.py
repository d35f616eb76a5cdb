"""Scripted worlds played against a live gateway with a fast clock (``eldercare-sim scenario run``).

The format is documented in ``docs/scenarios.md``. Python API::

    from simulators.scenario import ScenarioServices, load_scenario, run_scenarios

    report = await run_scenarios(["simulators/scenarios/sos-mistake.yaml"], speed=60)
    print(report.table())          # last line: scenarios passed=<n> failed=<m>
    exit_code = report.exit_code   # 0 only if every scenario passed

To share one broker and database server with other work (the demo), pass
``services=ScenarioServices.from_local(broker, database)``; each scenario still gets a
database of its own.

Modules: ``model`` (the file's types), ``loader`` (YAML, lines, checks), ``world``
(registry, people, devices), ``clock``, ``fleet`` (devices over MQTT), ``people``
(answers through the fake Twilio), ``observe`` and ``expect`` (what happened, and
the verdicts), ``runner``, ``report``. Errors: ``errors``.
"""

from __future__ import annotations

from simulators.scenario.errors import ScenarioError, ScenarioRunError
from simulators.scenario.loader import load_scenario
from simulators.scenario.plan import Scenario
from simulators.scenario.runner import (
    RunReport,
    ScenarioResult,
    ScenarioServices,
    private_scenario_services,
    run_scenario,
    run_scenarios,
)

__all__ = [
    "RunReport",
    "Scenario",
    "ScenarioError",
    "ScenarioResult",
    "ScenarioRunError",
    "ScenarioServices",
    "load_scenario",
    "private_scenario_services",
    "run_scenario",
    "run_scenarios",
]
