"""``eldercare`` command line: run the gateway, manage the schema, check payloads."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devices.contracts import DEVICE_TYPES
from gateway.config import ConfigError, GatewayConfig, load_config_or_default
from gateway.logging_setup import setup_logging
from gateway.storage.policy import StorageSetupError


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    """The ``-c`` file, else ./config.yaml when present, else defaults and the environment."""
    return load_config_or_default(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    """Until SIGTERM or SIGINT (to the gateway or its whole process group): then flush, stop the worker, exit 0."""
    from gateway.stop_signals import STOP_SIGNALS, record_stop_signals

    signalled = record_stop_signals()  # until the event loop's handlers below take over
    config = config_from_args(args)
    setup_logging(config.logging.level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        if signalled:
            stop.set()
        worker = None
        if config.notify.alert_worker == "process":
            from gateway.alerting.worker_process import AlertWorkerProcess

            # first, so its start overlaps ours (issue 19: an SOS paged within 1 s of a restart)
            worker = AlertWorkerProcess(config, stop)
            await worker.start_early()
        from gateway.service import Gateway

        await Gateway(config, early_worker=worker).run(stop)

    asyncio.run(main())
    record_stop_signals()  # a second Ctrl-C while the interpreter exits changes nothing
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from gateway.settings import conninfo, dsn_with_password, storage_policy
    from gateway.storage.schema import upgrade

    config = config_from_args(args)
    setup_logging(config.logging.level)
    dsn, kwargs = conninfo(config)
    applied = upgrade(dsn_with_password(dsn, kwargs), storage_policy(config))
    print(f"schema up to date; applied migrations: {applied or 'none'}")
    return 0


def cmd_device_schema(args: argparse.Namespace) -> int:
    from devices.contracts import CONTRACTS, json_schema

    pairs = [(args.type, args.channel or "telemetry")] if args.type else sorted(CONTRACTS)
    out = {f"{t}/{c}": json_schema(t, c) for t, c in pairs if (t, c) in CONTRACTS}
    if not out:
        print(f"no contract for {pairs}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def cmd_device_check(args: argparse.Namespace) -> int:
    """Check a vendor's sample payloads against the contract of a topic, or a live device's traffic."""
    import time

    from devices.codec import Rejected, decode_payload, route_topic

    if args.live:
        return _check_live(args)
    if not args.topic or not args.files:
        print("device check: give --topic and sample files, or --live --device ID", file=sys.stderr)
        return 2
    route = route_topic(args.topic)
    if isinstance(route, Rejected):
        print(f"topic {args.topic}: {route.reason}")
        return 1
    failures = 0
    now = time.time_ns() // 1_000_000
    for name in args.files:
        try:
            payload = Path(name).read_bytes() if name != "-" else sys.stdin.buffer.read()
        except OSError as error:
            print(f"{name}: cannot read: {error.strerror}")
            failures += 1
            continue
        result = decode_payload(payload.strip(), route, now)
        if isinstance(result, Rejected):
            print(f"{name}: REJECTED: {result.reason}")
            failures += 1
        else:
            print(f"{name}: ok ({len(result)} reading{'s' if len(result) != 1 else ''})")
    print(f"checked {len(args.files)}: {len(args.files) - failures} ok, {failures} rejected")
    return 1 if failures else 0


def _check_live(args: argparse.Namespace) -> int:
    from devices.live_check import check_live

    host, _, port = args.broker.rpartition(":")
    try:
        result = check_live(
            host or "127.0.0.1",
            int(port),
            args.device,
            seconds=args.seconds,
            count=args.count,
            username=args.username,
            password=args.password,
        )
    except (ConnectionError, OSError) as error:
        print(f"device check: {error}", file=sys.stderr)
        return 2
    return 1 if result.rejected or not result.total else 0


def cmd_registry_import(args: argparse.Namespace) -> int:
    import psycopg

    from gateway.domain.registry import RegistryError, load_registry
    from gateway.domain.registry_db import import_registry
    from gateway.settings import conninfo, dsn_with_password, storage_policy
    from gateway.storage.schema import upgrade

    config = config_from_args(args)
    from gateway.alerting.roster import RosterError, check_roster

    try:
        registry = load_registry(args.file)
        check_roster(registry, require_hotline=False)
    except (RegistryError, RosterError) as error:
        print(f"registry error: {error}", file=sys.stderr)
        return 2
    if registry.elders and not any(r.role == "hotline" for r in registry.responders):
        print("warning: no hotline responder; alerts nobody takes have no last tier to reach", file=sys.stderr)
    dsn, kwargs = conninfo(config)
    upgrade(dsn_with_password(dsn, kwargs), storage_policy(config))
    with psycopg.connect(dsn_with_password(dsn, kwargs)) as conn:
        n = import_registry(conn, registry)
    devices = sum(len(e.devices) for e in registry.elders)
    fences = sum(len(e.fences) for e in registry.elders)
    print(f"imported {n} elders, {devices} devices, {fences} fences")
    return 0


def _engine_call(args: argparse.Namespace, action: str) -> int:
    """Run one alert action through the same engine the gateway uses."""
    import os
    import time

    import psycopg
    from psycopg_pool import AsyncConnectionPool

    from gateway.alerting.downlinks import Downlink
    from gateway.alerting.engine import AlertEngine
    from gateway.alerting.store import AlertRow
    from gateway.domain.registry_db import load_registry_from_db
    from gateway.ingest.publish_once import publish_once
    from gateway.settings import conninfo, dsn_with_password

    config = config_from_args(args)
    dsn, kwargs = conninfo(config)
    dsn = dsn_with_password(dsn, kwargs)
    with psycopg.connect(dsn) as conn:
        registry = load_registry_from_db(conn)

    async def downlink(command: Downlink) -> None:
        from gateway.config import mqtt_password

        await publish_once(
            config.mqtt.host,
            config.mqtt.port,
            command.topic,
            json.dumps(command.payload, ensure_ascii=False).encode(),
            client_id=f"eldercare-cli-{os.getpid()}",
            username=config.mqtt.username,
            password=mqtt_password(config),
        )

    async def main() -> AlertRow | None:
        async with AsyncConnectionPool(dsn, min_size=1, max_size=2) as pool:
            engine = AlertEngine(pool, config.escalation, registry, lambda: time.time_ns() // 1_000_000, downlink)
            if action == "ack":
                return await engine.acknowledge(
                    args.alert, args.by, "cli", eta_s=args.eta_min * 60 if args.eta_min else None, note=args.note
                )
            if action == "on-scene":
                return await engine.on_scene(args.alert, args.by, "cli")
            return await engine.resolve(args.alert, args.by, "cli", args.outcome, note=args.note)

    from gateway.alerting.actions import AlertError

    try:
        alert = asyncio.run(main())
    except AlertError as error:
        print(f"cannot {action}: {error}", file=sys.stderr)
        return 1
    assert alert is not None
    print(
        f"{alert.code} {alert.kind} is now {alert.state}"
        + (f" (taken by {alert.acknowledged_by})" if alert.acknowledged_by else "")
    )
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    if args.alerts_command != "list":
        return _engine_call(args, args.alerts_command)
    import psycopg

    from gateway.settings import conninfo, dsn_with_password

    config = config_from_args(args)
    dsn, kwargs = conninfo(config)
    where = "WHERE a.state <> 'resolved'" if not args.all else ""
    with psycopg.connect(dsn_with_password(dsn, kwargs)) as conn:
        conn.execute("SELECT set_config('TimeZone', %s, false)", (config.escalation.timezone,))
        rows = conn.execute(
            "SELECT a.code, to_char(a.opened_at, 'MM-DD HH24:MI:SS'), a.severity, a.kind, a.state, "
            "coalesce(e.name, a.device_id), coalesce(a.community, ''), coalesce(a.acknowledged_by, ''), "
            f"(SELECT max(tier) + 1 FROM tier_firings f WHERE f.alert_id = a.alert_id) FROM alerts a "
            f"LEFT JOIN elders e USING (elder_id) {where} ORDER BY "
            "CASE a.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, a.opened_at "
            "LIMIT %s",
            (args.limit,),
        ).fetchall()
    print(
        f"{'alert':<8} {'opened':<15} {'severity':<9} {'kind':<20} {'state':<13} {'tier':>4}  "
        f"{'elder':<10} {'community':<10} taken by"
    )
    for code, opened, severity, kind, state, elder, community, by, tier in rows:
        print(
            f"{code:<8} {opened:<15} {severity:<9} {kind:<20} {state:<13} {tier or 0:>4}  "
            f"{elder:<10} {community:<10} {by}"
        )
    print(f"{len(rows)} alert(s)")
    return 0


def cmd_report_responses(args: argparse.Namespace) -> int:
    from gateway.alerting import report

    return _monthly_report(args, report.responses, report.render)


def cmd_report_vitals(args: argparse.Namespace) -> int:
    from gateway.alerting import vitals_report

    return _monthly_report(args, vitals_report.vitals, vitals_report.render)


def _monthly_report(args: argparse.Namespace, gather: Callable[..., Any], render: Callable[..., str]) -> int:
    """One month's report from the database, printed; a bad month is a usage error (exit 2)."""
    import psycopg

    from gateway.settings import conninfo, dsn_with_password

    config = config_from_args(args)
    dsn, kwargs = conninfo(config)
    try:
        with psycopg.connect(dsn_with_password(dsn, kwargs)) as conn:
            rows = gather(conn, args.month, config.escalation.timezone)
    except ValueError as error:
        print(str(error), file=sys.stderr)
        return 2
    print(render(rows, args.month))
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from gateway.provision import BrokerCredentials, ProvisionError

    creds = BrokerCredentials(Path(args.passwd_file), Path(args.acl_file))
    try:
        if args.provision_command == "gateway":
            print(f"gateway account {creds.gateway_user}: password {creds.add_gateway()}")
        elif args.provision_command == "add":
            for device, password in creds.add_devices(args.devices, args.type).items():
                print(f"{device}: password {password}")
        elif args.provision_command == "type":
            for device in args.devices:
                creds.set_type(device, args.device_type)
                print(f"{device}: may publish only as a {args.device_type}")
        elif args.provision_command == "rotate":
            print(f"{args.device}: new password {creds.rotate(args.device)}")
        elif args.provision_command == "revoke":
            creds.revoke(args.device)
            print(f"{args.device}: revoked")
        else:
            print("\n".join(creds.users()))
            return 0
    except ProvisionError as error:
        print(f"provision: {error}", file=sys.stderr)
        return 1
    for warning in creds.warnings:
        print(f"provision: warning: {warning}", file=sys.stderr)
    print("passwords are shown once; reload the broker to apply: kill -HUP $(pidof mosquitto)", file=sys.stderr)
    return 0


def cmd_falls_evaluate(args: argparse.Namespace) -> int:
    from gateway.detect.fall_evaluate import main as evaluate_main

    return int(evaluate_main([args.file, *(["--window-s", str(args.window_s)] if args.window_s else [])]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eldercare", description=__doc__)
    parser.add_argument("-c", "--config", help="config file (default: ./config.yaml if present)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway")
    run.set_defaults(func=cmd_run)

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_up = db_sub.add_parser("upgrade", help="create or migrate the schema (idempotent)")
    db_up.set_defaults(func=cmd_db_upgrade)

    device = sub.add_parser("device", help="device contracts")
    device_sub = device.add_subparsers(dest="device_command", required=True)
    schema = device_sub.add_parser("schema", help="print the JSON Schema of the contracts")
    schema.add_argument("--type", help="wristband, pager, glucose or bp")
    schema.add_argument("--channel", help="telemetry, event or status")
    schema.set_defaults(func=cmd_device_schema)

    check = device_sub.add_parser("check", help="check sample payloads (or a live device) against the contract")
    check.add_argument("--topic", help="e.g. eldercare/v1/wristband/wb-000123/telemetry")
    check.add_argument("files", nargs="*", help="files holding one payload each ('-' for stdin)")
    check.add_argument("--live", action="store_true", help="watch a device's traffic on the broker instead")
    check.add_argument("--device", default="+", help="with --live: the device id (default: every device)")
    check.add_argument("--broker", default="127.0.0.1:1883", help="with --live: host:port")
    check.add_argument("--seconds", type=float, default=60.0, help="with --live: how long to watch")
    check.add_argument("--count", type=int, help="with --live: stop after this many messages")
    check.add_argument("--username")
    check.add_argument("--password")
    check.set_defaults(func=cmd_device_check)

    registry = sub.add_parser("registry", help="elders, devices and fences")
    registry_sub = registry.add_subparsers(dest="registry_command", required=True)
    reg_import = registry_sub.add_parser("import", help="import a registry YAML file into the database")
    reg_import.add_argument("file")
    reg_import.set_defaults(func=cmd_registry_import)

    alerts = sub.add_parser("alerts", help="list, take and close alerts")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True)
    a_list = alerts_sub.add_parser("list", help="open alerts, most severe and oldest first")
    a_list.add_argument("--all", action="store_true", help="include resolved alerts")
    a_list.add_argument("--limit", type=int, default=100)
    a_list.set_defaults(func=cmd_alerts)
    a_ack = alerts_sub.add_parser("ack", help="take responsibility for an alert")
    a_ack.add_argument("alert", help="alert code (A123) or id")
    a_ack.add_argument("--by", required=True, help="who takes it")
    a_ack.add_argument("--eta-min", type=float, help="expected minutes until on scene")
    a_ack.add_argument("--note")
    a_ack.set_defaults(func=cmd_alerts)
    a_scene = alerts_sub.add_parser("on-scene", help="the responder has arrived")
    a_scene.add_argument("alert")
    a_scene.add_argument("--by", required=True)
    a_scene.set_defaults(func=cmd_alerts)
    a_res = alerts_sub.add_parser("resolve", help="close an alert with its outcome")
    a_res.add_argument("alert")
    a_res.add_argument("--by", required=True)
    a_res.add_argument(
        "--outcome",
        required=True,
        choices=["false_alarm", "handled_at_home", "sent_to_hospital", "condition_cleared", "other"],
    )
    a_res.add_argument("--note")
    a_res.set_defaults(func=cmd_alerts)

    prov = sub.add_parser("provision", help="device credentials and broker ACL")
    prov.add_argument("--passwd-file", default="/etc/mosquitto/eldercare.passwd")
    prov.add_argument("--acl-file", default="/etc/mosquitto/eldercare.acl")
    prov_sub = prov.add_subparsers(dest="provision_command", required=True)
    prov_sub.add_parser("gateway", help="create or reset the gateway's own account").set_defaults(func=cmd_provision)
    p_add = prov_sub.add_parser("add", help="credentials for new devices (all of one type)")
    p_add.add_argument(
        "--type", required=True, choices=DEVICE_TYPES, help="the registered type: the only topics it may publish on"
    )
    p_add.add_argument("devices", nargs="+")
    p_add.set_defaults(func=cmd_provision)
    p_type = prov_sub.add_parser("type", help="set the type of existing accounts (made by an older version)")
    p_type.add_argument("device_type", choices=DEVICE_TYPES)
    p_type.add_argument("devices", nargs="+")
    p_type.set_defaults(func=cmd_provision)
    for name, text in (("rotate", "a new password for a device"), ("revoke", "remove a device's access")):
        p = prov_sub.add_parser(name, help=text)
        p.add_argument("device")
        p.set_defaults(func=cmd_provision)
    prov_sub.add_parser("list", help="accounts in the password file").set_defaults(func=cmd_provision)

    report = sub.add_parser("report", help="reports")
    report_sub = report.add_subparsers(dest="report_command", required=True)
    rep = report_sub.add_parser("responses", help="response times per community and tier")
    rep.add_argument("--month", required=True, help="e.g. 2026-11")
    rep.set_defaults(func=cmd_report_responses)
    vit = report_sub.add_parser("vitals", help="monthly vitals and activity per elder (from the hourly rollups)")
    vit.add_argument("--month", required=True, help="e.g. 2026-11")
    vit.set_defaults(func=cmd_report_vitals)

    falls = sub.add_parser("falls", help="fall detector")
    falls_sub = falls.add_subparsers(dest="falls_command", required=True)
    evaluate = falls_sub.add_parser("evaluate", help="score the detector on a fall trial set")
    evaluate.add_argument("file")
    evaluate.add_argument("--window-s", type=float, default=None)
    evaluate.set_defaults(func=cmd_falls_evaluate)

    # commands that live beside the code they drive; each module keeps its heavy imports lazy
    from gateway.api.cli import register as register_users

    register_users(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    except StorageSetupError as error:
        print(f"storage error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
