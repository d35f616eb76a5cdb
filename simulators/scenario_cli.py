"""``eldercare-sim scenario run FILE...``: scripted worlds played against a live gateway.

``run`` plays each file against a fresh gateway and database with a fast clock and
prints one row per scenario; the last line is ``scenarios passed=<n> failed=<m>`` and
the exit code is 0 only if all passed (2 when a file is invalid: nothing is run).
``check`` only reads the files. The format: ``docs/scenarios.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = "config.yaml"


def register(sub: Any) -> None:
    """Add the ``scenario`` command to the ``eldercare`` parser."""
    scenario = sub.add_parser("scenario", help="scripted scenarios against a live gateway")
    scenario_sub = scenario.add_subparsers(dest="scenario_command", required=True)
    run = scenario_sub.add_parser("run", help="play scenario files and print a pass/fail table")
    run.add_argument("files", nargs="+", metavar="FILE")
    run.add_argument(
        "--speed",
        type=float,
        default=None,
        help="scenario seconds per real second (default: each file's speed, else 60)",
    )
    run.add_argument(
        "--mqtt-port", type=int, default=None, help="use this running broker (127.0.0.1) instead of a private one"
    )
    run.add_argument(
        "--postgres",
        default=None,
        metavar="DSN",
        help="use this PostgreSQL server (scenarios create and drop their own databases there)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="tell what happens as it happens")
    run.set_defaults(func=cmd_scenario_run)
    check = scenario_sub.add_parser("check", help="only check that scenario files are valid")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(func=cmd_scenario_check)


def _load_all(files: list[str]) -> list[Any] | None:
    import sys

    from simulators.scenario import ScenarioError, load_scenario

    scenarios, bad = [], 0
    for file in files:
        try:
            scenarios.append(load_scenario(file))
        except ScenarioError as error:
            print(f"invalid scenario: {error}", file=sys.stderr)
            bad += 1
    return None if bad else scenarios


def cmd_scenario_check(args: argparse.Namespace) -> int:
    scenarios = _load_all(args.files)
    if scenarios is None:
        return 2
    for s in scenarios:
        print(
            f"{s.path}: ok ({len(s.world.elders)} elders, {len(s.timeline)} steps, {len(s.expectations)} expectations)"
        )
    return 0


def cmd_scenario_run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import sys

    from simulators.scenario.report import render_failures
    from simulators.scenario.runner import ScenarioResult, ScenarioServices, base_sections, run_scenarios

    if (args.mqtt_port is None) != (args.postgres is None):
        print("give both --mqtt-port and --postgres to use running services", file=sys.stderr)
        return 2
    scenarios = _load_all(args.files)
    if scenarios is None:
        return 2
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    config = args.config if args.config else (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None)
    base_sections(config)  # a config that cannot be read is a ConfigError now, before anything starts
    services = ScenarioServices(args.mqtt_port, args.postgres) if args.mqtt_port is not None else None

    def progress(result: ScenarioResult) -> None:
        print(f"{result.name}: {result.status.upper()} in {result.real_s:.1f} s", flush=True)

    try:
        report = asyncio.run(
            run_scenarios(
                scenarios,
                speed=args.speed,
                services=services,
                config=config,
                narrate=(lambda line: print(line, flush=True)) if args.verbose else None,
                progress=progress,
            )
        )
    except KeyboardInterrupt:
        print("\nstopped; the services this run started have been shut down", file=sys.stderr)
        return 130
    failures = render_failures(report.results)
    if failures:
        print(failures)
    print(report.table())
    return report.exit_code
