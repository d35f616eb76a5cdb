"""Typed configuration: ``config.yaml`` plus environment overrides, checked at start-up.

Every section is a msgspec Struct with ``forbid_unknown_fields`` so a typo is an
error, not a silently ignored setting. Any key can be overridden by an environment
variable ``ELDERCARE_<SECTION>__<KEY>`` (e.g. ``ELDERCARE_DATABASE__DSN``,
``ELDERCARE_MQTT__PASSWORD``), which is how secrets stay out of the file; numbers
and booleans are converted per field, and a value starting with ``[`` or ``{`` is
read as YAML. A key ending in ``_file`` names a file
whose contents are the secret (it must not be readable by others).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta

from gateway.alerting.policy import EscalationConfig, PolicyError, validate
from gateway.api.settings import ApiConfig

ENV_PREFIX = "ELDERCARE_"

PositiveInt = Annotated[int, Meta(gt=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]
Port = Annotated[int, Meta(ge=1, le=65_535)]


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what is wrong."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of every section: strict keys, immutable once loaded."""


class MqttConfig(_Section, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Port = 1883
    client_id: str = "eldercare-gateway"
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    topic_filters: list[str] = msgspec.field(
        default_factory=lambda: ["eldercare/v1/+/+/telemetry", "eldercare/v1/+/+/event", "eldercare/v1/+/+/status"]
    )
    share_group: str | None = None
    keepalive_s: Annotated[int, Meta(ge=5, le=3600)] = 30
    session_expiry_s: PositiveInt = 7 * 86_400
    receive_maximum: Annotated[int, Meta(ge=10, le=65_535)] = 65_535
    tls_ca_file: str | None = None


class DatabaseConfig(_Section, frozen=True, kw_only=True):
    dsn: str = "postgresql://postgres@127.0.0.1:5432/eldercare"
    password_file: str | None = None
    pool_min: Annotated[int, Meta(ge=1)] = 2
    pool_max: Annotated[int, Meta(ge=1)] = 8
    connect_timeout_s: PositiveFloat = 5.0


class IngestConfig(_Section, frozen=True, kw_only=True):
    batch_max_messages: Annotated[int, Meta(ge=1, le=60_000)] = 2_000
    # telemetry waits up to this long to share a transaction; device events (SOS, fall) never wait.
    # 100 ms cut the soak's CPU per 1,000 devices from 0.98% to 0.375% (issue 19), but with it
    # a gateway stopped during a database outage left a socket unclosed (test_notify_e2e):
    # kept at 5 ms until that is understood
    batch_max_age_ms: Annotated[float, Meta(gt=0, le=1000)] = 5.0
    max_pending_batches: Annotated[int, Meta(ge=2, le=64)] = 8
    max_payload_bytes: Annotated[int, Meta(ge=256, le=1_048_576)] = 65_536
    max_past_s: PositiveInt = 7 * 86_400
    max_future_s: PositiveInt = 300
    # per device: a flooding device has its excess dropped, counted and reported (see rate_limit.py)
    device_rate_per_s: PositiveFloat = 50.0
    device_burst: PositiveFloat = 3_000.0  # room for a day of readings uploaded after an outage
    device_event_rate_per_s: PositiveFloat = 5.0
    device_event_burst: PositiveFloat = 50.0


class StorageConfig(_Section, frozen=True, kw_only=True):
    # auto: TimescaleDB when installed (refused if not preloaded), timescaledb: required,
    # partitions: plain daily partitions. Read when a database is created; it keeps its mode.
    engine: Literal["auto", "timescaledb", "partitions"] = "auto"
    spool_dir: str = "var/spool"
    partition_ahead_days: Annotated[int, Meta(ge=1, le=60)] = 3
    retention_days: Annotated[int, Meta(ge=1)] = 400
    compress_after_days: Annotated[int, Meta(ge=1)] = 7  # TimescaleDB only
    db_retry_s: PositiveFloat = 1.0
    upkeep_interval_s: PositiveFloat = 3600.0  # partitions, plain rollups, the upkeep outcome check


TimeWindow = Annotated[str, Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")]


class DetectConfig(_Section, frozen=True, kw_only=True):
    """Detector tuning; defaults follow DESIGN.md and the clinical sources in clinical.py."""

    timezone: str = "Asia/Shanghai"
    tick_s: PositiveFloat = 1.0
    persistence_readings: Annotated[int, Meta(ge=1, le=100)] = 3
    persistence_span_s: PositiveFloat = 120.0
    clear_readings: Annotated[int, Meta(ge=1, le=100)] = 2
    fence_margin_m: Annotated[float, Meta(ge=0, le=1000)] = 25.0
    fence_dwell_readings: Annotated[int, Meta(ge=1, le=100)] = 2
    fence_dwell_s: Annotated[float, Meta(ge=0)] = 60.0
    fence_reentry_readings: Annotated[int, Meta(ge=1, le=100)] = 2
    fence_clear_accuracy_m: PositiveFloat = 50.0
    gps_max_accuracy_m: PositiveFloat = 500.0
    night: TimeWindow = "20:00-06:00"
    day: TimeWindow = "08:00-20:00"
    sos_cancel_grace_s: Annotated[float, Meta(ge=0, le=600)] = 30.0
    fall_confirm_s: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    fall_movement_steps: Annotated[int, Meta(ge=1)] = 10
    battery_warning_pct: Annotated[float, Meta(ge=0, le=100)] = 15.0
    battery_critical_pct: Annotated[float, Meta(ge=0, le=100)] = 5.0
    battery_clear_pct: Annotated[float, Meta(ge=0, le=100)] = 20.0
    not_worn_readings: Annotated[int, Meta(ge=1)] = 2
    silent_factor: Annotated[float, Meta(ge=1)] = 3.0
    inactivity_hours: PositiveFloat = 4.0


class RegistryConfig(_Section, frozen=True, kw_only=True):
    """Where elders, devices and fences come from: a file (imported at start) or the database."""

    file: str | None = None
    reload_s: PositiveFloat = 5.0  # how often running gateways look for registry changes (console edits)


E164 = Annotated[str, Meta(pattern=r"^\+[1-9]\d{6,14}$")]


class TwilioConfig(_Section, frozen=True, kw_only=True):
    """Twilio credentials; keep the token in the environment or a chmod-600 file."""

    account_sid: str
    auth_token: str | None = None
    auth_token_file: str | None = None
    sms_from: E164
    voice_from: E164
    base_url: str | None = None  # another server speaking Twilio's API (the local fake)
    timeout_s: PositiveFloat = 10.0


class WebhookConfig(_Section, frozen=True, kw_only=True):
    url: str
    secret: str | None = None
    secret_file: str | None = None


class ProviderTemplate(_Section, frozen=True, kw_only=True):
    """A template registered with a China provider and which gateway field fills each parameter.

    Aliyun names its parameters (``${name}``): ``params: {name: elder, code: code}``;
    Tencent numbers them (``{1}``): ``params: {"1": elder, "2": code}``. The fields are
    listed in ``gateway.notify.template_fields.FIELDS``.
    """

    template: str
    params: dict[str, str] = {}


class ChinaProviderConfig(_Section, frozen=True, kw_only=True):
    """What Aliyun and Tencent Cloud share: a key pair, a signature, templates, a callback token.

    ``sms_templates`` maps each purpose (page, taken, retraction, resolved, summary), or
    ``purpose.kind`` for one kind of alert (``page.fall``), to a template; ``voice_templates``
    needs ``page`` (what the call says; 1 takes the alert, 2 passes it on). Callbacks come to
    ``{public_base_url}/{aliyun|tencent}/{callback_token}/...`` (docs/deployment.md).
    """

    access_key_id: str
    access_key_secret: str | None = None
    access_key_secret_file: str | None = None
    sign_name: str
    sms_templates: dict[str, ProviderTemplate]
    voice_templates: dict[str, ProviderTemplate] = {}
    callback_token: str | None = None
    callback_token_file: str | None = None
    endpoint: str | None = None  # host:port of another server speaking the API (the local fake)
    protocol: Literal["https", "http"] = "https"
    timeout_s: PositiveFloat = 10.0


class AliyunConfig(ChinaProviderConfig, frozen=True, kw_only=True):
    """Aliyun SMS (dysmsapi) and voice (dyvmsapi IvrCall)."""

    region: str = "cn-hangzhou"
    called_show_number: str | None = None  # the voice number calls come from (needed for voice)


class TencentConfig(ChinaProviderConfig, frozen=True, kw_only=True):
    """Tencent Cloud SMS and voice messages (VMS)."""

    region: str = "ap-guangzhou"
    sms_app_id: str
    voice_app_id: str | None = None  # VoiceSdkAppid (needed for voice)


class NotifyConfig(_Section, frozen=True, kw_only=True):
    """How people are reached, and where Twilio reaches us back."""

    enabled: bool = True
    public_base_url: str = "http://127.0.0.1:8080"  # the URL Twilio calls for webhooks
    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Meta(ge=0, le=65_535)] = 8080
    twilio: TwilioConfig | None = None
    webhook: WebhookConfig | None = None
    aliyun: AliyunConfig | None = None
    tencent: TencentConfig | None = None
    # who carries a +86 number first; the rest (and Twilio) follow in this order
    china_order: tuple[Literal["aliyun", "tencent", "twilio"], ...] = ("aliyun", "tencent", "twilio")
    console: bool = False  # log messages instead of sending (development)
    calls_per_hour: Annotated[int, Meta(ge=1)] = 6
    max_attempts: Annotated[int, Meta(ge=1, le=50)] = 5
    backoff_initial_s: PositiveFloat = 2.0
    backoff_max_s: PositiveFloat = 60.0
    keep_trying_s: PositiveFloat = 3600.0  # a page failing in a provider outage: retried while needed
    lease_s: PositiveFloat = 20.0  # a crash mid-send repeats the page after this; > one send attempt
    # where the alert engine and the outbox run: "process", a worker of their own that telemetry
    # load cannot slow (gateway/alerting/worker.py); "inline", on the gateway's event loop
    alert_worker: Literal["process", "inline"] = "process"


class LoggingConfig(_Section, frozen=True, kw_only=True):
    level: str = "INFO"
    stats_interval_s: PositiveFloat = 60.0


class ClusterConfig(_Section, frozen=True, kw_only=True):
    """Several gateway processes on one broker and one database (see docs/deployment-city.md).

    Storage shares the load through ``mqtt.share_group``; each instance also reads the full
    stream on a second connection and runs the detectors for the elders it owns (rendezvous
    hashing over the live instances, which heartbeat in ``gateway_instances``).
    """

    enabled: bool = False
    instance_id: str | None = None  # stable across restarts; default: mqtt.client_id
    heartbeat_s: Annotated[float, Meta(gt=0, le=60)] = 2.0
    dead_after_s: Annotated[float, Meta(gt=0, le=600)] = 10.0  # no heartbeat this long: taken over
    replay_s: Annotated[float, Meta(ge=0, le=86_400)] = 900.0  # history replayed for elders gained
    settle_s: Annotated[float, Meta(ge=0, le=30)] = 0.5  # lets rows in flight commit before a replay
    detect_session_expiry_s: PositiveInt = 600
    takeover_timeout_s: PositiveFloat = 30.0  # draining a dead instance's broker session


class GatewayConfig(_Section, frozen=True, kw_only=True):
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    database: DatabaseConfig = msgspec.field(default_factory=DatabaseConfig)
    ingest: IngestConfig = msgspec.field(default_factory=IngestConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    detect: DetectConfig = msgspec.field(default_factory=DetectConfig)
    registry: RegistryConfig = msgspec.field(default_factory=RegistryConfig)
    escalation: EscalationConfig = msgspec.field(default_factory=EscalationConfig)
    notify: NotifyConfig = msgspec.field(default_factory=NotifyConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)


def _apply_env(raw: dict[str, Any], environ: dict[str, str]) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {'.'.join(path[:-1])} is not a section")
            node = child
        # strings as given (a phone number "+8613..." must not become a number); the
        # conversion to int/float/bool happens in msgspec's lax mode, per field type
        node[path[-1]] = _yaml(value, name) if value.lstrip()[:1] in ("[", "{") else value


def _yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    except RecursionError:  # PyYAML composes recursively
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None


def _read_secret_file(key: str, path: str) -> str:
    file = Path(path)
    try:
        mode = file.stat().st_mode
    except OSError as error:
        raise ConfigError(f"{key}: cannot read {path}: {error.strerror}") from None
    except ValueError:  # a NUL in the path
        raise ConfigError(f"{key}: {path!r} is not a file name") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{key}: {path} must not be readable by group or others (chmod 600)")
    try:
        return file.read_text(encoding="utf-8").strip()
    except OSError as error:  # a directory, or gone since stat
        raise ConfigError(f"{key}: cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from None


def _error_message(error: msgspec.ValidationError, source: str) -> str:
    text = str(error)
    if " - at `$." in text:
        what, where = text.rsplit(" - at `$.", 1)
        return f"{source}: {where.rstrip('`')}: {what}"
    return f"{source}: {text}"


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> GatewayConfig:
    """Read, override from the environment, and validate; raise ``ConfigError``."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"{source}: cannot read: {error.strerror}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"{source}: not UTF-8 text (byte {error.start})") from None
        loaded = _yaml(text, source)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections")
        raw = loaded or {}
    _apply_env(raw, dict(os.environ) if environ is None else environ)
    try:
        config = msgspec.convert(raw, GatewayConfig, strict=False)
    except msgspec.ValidationError as error:
        raise ConfigError(_error_message(error, source)) from None
    if config.database.pool_max < config.database.pool_min:
        raise ConfigError(f"{source}: database.pool_max: must be >= database.pool_min")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(config.detect.timezone)
    except Exception:
        raise ConfigError(f"{source}: detect.timezone: unknown time zone {config.detect.timezone!r}") from None
    try:
        validate(config.escalation)
    except PolicyError as error:
        raise ConfigError(f"{source}: escalation: {error}") from None
    if config.notify.twilio is not None:
        twilio_token(config)  # fail at start-up, not at the first emergency
    if config.notify.webhook is not None:
        webhook_secret(config)
    for name in ("aliyun", "tencent"):
        if getattr(config.notify, name) is not None:
            try:
                china_secrets(config, name)
                check_china_templates(name, getattr(config.notify, name))
            except ConfigError as error:
                raise ConfigError(f"{source}: {error}") from None
    d = config.detect
    if not d.battery_critical_pct < d.battery_warning_pct < d.battery_clear_pct:
        raise ConfigError(f"{source}: detect: battery_critical_pct < battery_warning_pct < battery_clear_pct must hold")
    return config


def mqtt_password(config: GatewayConfig) -> str | None:
    if config.mqtt.password_file:
        return _read_secret_file("mqtt.password_file", config.mqtt.password_file)
    return config.mqtt.password


def _required_secret(key: str, inline: str | None, file: str | None) -> str:
    """A secret given inline (best from the environment) or as a private file; never both missing."""
    if file:
        return _read_secret_file(f"{key}_file", file)
    if not inline:
        env = ENV_PREFIX + "__".join(part.upper() for part in key.split("."))
        raise ConfigError(f"{key}: set it (e.g. {env}) or {key.rsplit('.', 1)[1]}_file")
    return inline


def twilio_token(config: GatewayConfig) -> str:
    twilio = config.notify.twilio
    if twilio is None:
        raise ConfigError("notify.twilio is not configured")
    return _required_secret("notify.twilio.auth_token", twilio.auth_token, twilio.auth_token_file)


def webhook_secret(config: GatewayConfig) -> str:
    hook = config.notify.webhook
    if hook is None:
        raise ConfigError("notify.webhook is not configured")
    return _required_secret("notify.webhook.secret", hook.secret, hook.secret_file)


def china_secrets(config: GatewayConfig, name: str) -> tuple[str, str]:
    """(access key secret, callback token) of ``notify.aliyun`` or ``notify.tencent``."""
    section: ChinaProviderConfig | None = getattr(config.notify, name)
    if section is None:
        raise ConfigError(f"notify.{name} is not configured")
    secret = _required_secret(
        f"notify.{name}.access_key_secret", section.access_key_secret, section.access_key_secret_file
    )
    token = _required_secret(f"notify.{name}.callback_token", section.callback_token, section.callback_token_file)
    if len(token) < 16 or not token.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"notify.{name}.callback_token: at least 16 letters, digits, - or _ (it is in a URL)")
    return secret, token


def check_china_templates(name: str, section: ChinaProviderConfig) -> None:
    """Every purpose has a template and every parameter a known field: found at start-up, not at 3 a.m."""
    from gateway.notify.template_fields import check_templates

    problem = check_templates(
        section.sms_templates,
        section.voice_templates,
        needs_voice=_voice_configured(section),
        numbered=name == "tencent",
    )
    if problem:
        raise ConfigError(f"notify.{name}.{problem}")


def _voice_configured(section: ChinaProviderConfig) -> bool:
    return bool(getattr(section, "called_show_number", None) or getattr(section, "voice_app_id", None))


def database_password(config: GatewayConfig) -> str | None:
    if config.database.password_file:
        return _read_secret_file("database.password_file", config.database.password_file)
    return None


DEFAULT_CONFIG = "config.yaml"


def load_config_or_default(path: str | None) -> GatewayConfig:
    """A command's ``-c`` file, else ./config.yaml when present, else defaults and the environment."""
    if path is None and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    return load_config(path)
