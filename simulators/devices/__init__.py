"""Device simulators that publish exactly as real firmware would under ``devices/`` contracts.

Payloads are built from the contract structs themselves (``simulators.devices.wire``), so
what a simulator sends cannot drift from what the gateway decodes.

Devices (all take ``device_id`` first, then keywords; ``clock`` is a callable returning
device time in ms since the epoch, default the wall clock, so a scenario runner can run
a fast clock; ``seed`` makes everything reproducible)::

    Wristband(device_id, *, home=(lat, lon), clock=None, seed=None, interval_s=60.0,
              tz="Asia/Shanghai", habits=None, accel="impacts"|"stream"|"off",
              accel_window_s=2.0, rest_bpm=None, spo2_pct=None, battery=85.0,
              drain_pct_per_h=1.2, band_detects_falls=True, status_every_s=3600.0)
        .sos() .cancel() .fall(recover_after_s=None) .get_up() .take_off() .put_on()
        .walk_to("market"|"park"|"post_station"|"clinic") .wander() .bring_home()
        .position() -> (lat, lon)     .vitals_override = {"hr": 38.0, "spo2": 85.0}
    Pager(device_id, *, clock=None, seed=None, battery=95.0, status_every_s=3600.0, calls_per_day=0.0)
        .sos() .call() .cancel() .press(event)
    GlucoseMeter(device_id, *, clock=None, seed=None, tz=..., control_mmol=None,
                 unit="mmol/L"|"mg/dL", mode="normal"|"hypo"|"hyper", error_rate=0.02)
        .measure(context=None) .hypoglycaemia() .error(code=None)     .mode = "hypo"
    BloodPressureCuff(device_id, *, clock=None, seed=None, tz=..., systolic=None, diastolic=None,
                      pulse=None, mode="normal"|"crisis", error_rate=0.02)
        .measure() .crisis() .error(code=None)                       .mode = "crisis"

Every device (``SimulatedDevice``)::

    advance(now_ms) -> list[Outgoing]   # messages due up to now_ms of device time; no I/O
    step() -> list[Outgoing]            # advance to clock() and publish (queued while offline)
    connect(host, port, *, password=None, wait_s=10.0, keepalive_s=30, backoff_s=(0.5, 30.0),
            tls_ca=None) -> DeviceConnection   # raises DeviceRefused if the broker refuses it
    drop()                              # lose the network without DISCONNECT: the broker sends the will
    close()                             # clean disconnect
    commands: list[ReceivedCommand]     # every cmd received (at_ms, DeviceCommand, raw bytes)
    on_command: Callable[[ReceivedCommand], None] | None   # optional hook
    sent: deque[Outgoing]               # everything emitted (topic, channel, record, payload)

``Outgoing`` is ``(topic, channel, record, payload)``. Scripted actions publish at once
when connected, otherwise they wait for the next ``advance``. A wristband or pager shows
a ``help_coming`` / ``confirm`` command, logs it and answers with a ``received`` event
carrying the alert code; meters log and record commands (their contract has no receipt).
The shared models are importable too: ``accel`` (50 Hz activities and falls), ``paths``
(street grid, day plans, wandering), ``physiology`` (vectorised vitals, glucose, blood
pressure, GPS noise, battery), ``batch`` (many devices as arrays, for fleets) and ``link``
(the fleet's bulk MQTT connections).

Device time must stay within what the gateway accepts (at most 7 days old, 5 minutes ahead
of the gateway's clock), so a fast clock suits a gateway running on the same clock.
"""

from simulators.devices.base import DeviceCommand, Outgoing, ReceivedCommand, SimulatedDevice, wall_clock_ms
from simulators.devices.connection import DeviceConnection, DeviceRefused
from simulators.devices.meters import BloodPressureCuff, GlucoseMeter
from simulators.devices.pager import Pager
from simulators.devices.wristband import Wristband

DEVICE_CLASSES: dict[str, type[SimulatedDevice]] = {
    "wristband": Wristband,
    "pager": Pager,
    "glucose": GlucoseMeter,
    "bp": BloodPressureCuff,
}

__all__ = [
    "DEVICE_CLASSES",
    "BloodPressureCuff",
    "DeviceCommand",
    "DeviceConnection",
    "DeviceRefused",
    "GlucoseMeter",
    "Outgoing",
    "Pager",
    "ReceivedCommand",
    "SimulatedDevice",
    "Wristband",
    "wall_clock_ms",
]
