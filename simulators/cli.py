"""``eldercare-sim``: the simulated world for testers and the demo.

The production ``eldercare`` command runs and manages the gateway and imports nothing
from ``simulators``; the demo, scripted scenarios and the load generator live here.
"""

from __future__ import annotations

import argparse
import sys

from gateway.config import ConfigError


def cmd_demo(args: argparse.Namespace) -> int:
    from simulators.demo import main as demo_main

    return demo_main(args.duration)


def build_parser() -> argparse.ArgumentParser:
    from simulators.fleet_cli import register as register_simulate
    from simulators.scenario_cli import register as register_scenario

    parser = argparse.ArgumentParser(prog="eldercare-sim", description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", help="base gateway config for scenarios (default: ./config.yaml if present)")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the whole product with a simulated community")
    demo.add_argument(
        "--duration", type=float, default=0.0, help="seconds to run (0: until the scripted scenarios are done)"
    )
    demo.set_defaults(func=cmd_demo)
    register_scenario(sub)
    register_simulate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
