"""``eldercare-sim simulate``: a large simulated fleet, the load generator."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO


class ProgressLine:
    """One line on stderr refreshed in place on a terminal; plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._open = False

    def __call__(self, progress: Any) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + progress.line())
            self._open = True
        else:
            self.stream.write(progress.line() + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulators.fleet import (
        DEFAULT_MIX,
        FleetConfig,
        FleetError,
        load_credentials,
        parse_broker,
        parse_mix,
        run_fleet,
    )

    try:
        host, port = parse_broker(args.broker)
        mix = parse_mix(args.mix) if args.mix else dict(DEFAULT_MIX)
        credentials = load_credentials(args.credentials) if args.credentials else None
    except (FleetError, OSError) as error:
        print(f"simulate: {error}", file=sys.stderr)
        return 2
    if credentials is not None and args.username:
        print("simulate: give either --username/--password or --credentials, not both", file=sys.stderr)
        return 2
    config = FleetConfig(
        devices=args.devices,
        rate=args.rate,
        duration_s=args.duration,
        host=host,
        port=port,
        mix=mix,
        qos=args.qos,
        username=args.username,
        password=args.password,
        credentials=credentials,
        processes=args.processes,
        connections=args.connections,
        window=args.window,
        id_prefix=args.id_prefix,
        seed=args.seed,
    )
    line = ProgressLine()
    try:
        result = run_fleet(config, progress=line)
    except FleetError as error:
        line.finish()
        print(f"simulate: {error}", file=sys.stderr)
        return 2
    line.finish()
    if args.json:
        from dataclasses import asdict

        print(json.dumps({**asdict(result), "mean_rate": round(result.mean_rate, 1)}, ensure_ascii=False))
    else:
        print(result.summary())
    if result.interrupted:
        return 130
    return 0 if result.errors == 0 and result.acked == result.sent else 1


def register(sub: Any) -> None:
    """Add the ``simulate`` command to the ``eldercare-sim`` parser."""
    p = sub.add_parser(
        "simulate",
        help="a large simulated fleet publishing to a broker (load generator)",
        description="Simulated wristbands, pagers, glucose meters and BP cuffs publishing realistic payloads "
        "at a fixed aggregate rate. Progress on stderr, summary on stdout; Ctrl-C stops with the "
        "summary. Exit status 0 when every message was acknowledged.",
    )
    p.add_argument("--devices", type=int, default=1000, help="number of devices (default 1000)")
    p.add_argument("--rate", type=float, default=1000.0, help="messages per second, all devices together")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of sending (default 10)")
    p.add_argument("--broker", default="127.0.0.1:1883", help="host:port (default 127.0.0.1:1883)")
    p.add_argument("--mix", help="device types and shares, e.g. wristband=0.7,pager=0.1,glucose=0.1,bp=0.1")
    p.add_argument("--username", help="one account for all devices (many devices per connection)")
    p.add_argument("--password")
    p.add_argument(
        "--credentials",
        metavar="FILE",
        help="per-device passwords ('DEVICE: password SECRET' lines, as 'eldercare provision add' "
        "prints them): one connection per device",
    )
    p.add_argument("--qos", type=int, choices=(0, 1), default=1)
    p.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--connections",
        type=int,
        default=0,
        help="connections per process for a shared account (default: 1 per 2,500 devices, at most 4)",
    )
    p.add_argument("--window", type=int, default=0, help="unacknowledged messages per connection (default auto)")
    p.add_argument("--id-prefix", default="sim-", help="prefix of generated device ids (default sim-)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_simulate)
