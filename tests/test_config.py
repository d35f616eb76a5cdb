"""Configuration errors name the key; the environment overrides; secret files are guarded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, mqtt_password

REPO = Path(__file__).resolve().parent.parent


def test_shipped_config_is_valid() -> None:
    config = load_config(REPO / "config.yaml", environ={})
    assert config.mqtt.receive_maximum == 65_535
    assert config.ingest.batch_max_age_ms > 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mqtt:\n  prot: 1883\n", "config.yaml: mqtt: Object contains unknown field `prot`"),
        ("mqtt:\n  port: 70000\n", "config.yaml: mqtt.port: Expected `int` <= 65535"),
        ("ingest:\n  batch_max_age_ms: 0\n", "config.yaml: ingest.batch_max_age_ms: Expected `float` > 0"),
        ("database:\n  pool_min: 5\n  pool_max: 2\n", "database.pool_max: must be >= database.pool_min"),
        ("- just a list\n", "the top level must be a mapping"),
        ("mqtt: [\n", "not valid YAML"),
    ],
)
def test_errors_name_the_key_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert message in str(error.value)


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("mqtt:\n  port: 1883\n")
    config = load_config(
        path,
        environ={
            "ELDERCARE_MQTT__PORT": "2883",
            "ELDERCARE_DATABASE__DSN": "postgresql://x/y",
            "ELDERCARE_MQTT__PASSWORD": "s3cret",
            "UNRELATED": "1",
        },
    )
    assert config.mqtt.port == 2883
    assert config.database.dsn == "postgresql://x/y"
    assert mqtt_password(config) == "s3cret"


def test_a_phone_number_from_the_environment_stays_a_string() -> None:
    config = load_config(
        None,
        environ={
            "ELDERCARE_NOTIFY__TWILIO__ACCOUNT_SID": "AC123",
            "ELDERCARE_NOTIFY__TWILIO__AUTH_TOKEN": "t",
            "ELDERCARE_NOTIFY__TWILIO__SMS_FROM": "+15005550006",
            "ELDERCARE_NOTIFY__TWILIO__VOICE_FROM": "+8613800138000",
            "ELDERCARE_NOTIFY__CONSOLE": "true",
            "ELDERCARE_ESCALATION__QUIET_HOURS": "23:00-06:00",
        },
    )
    assert config.notify.twilio is not None and config.notify.twilio.sms_from == "+15005550006"
    assert config.notify.console is True and config.escalation.quiet_hours == "23:00-06:00"


def test_missing_twilio_token_is_named_with_its_variable() -> None:
    with pytest.raises(ConfigError, match="ELDERCARE_NOTIFY__TWILIO__AUTH_TOKEN"):
        load_config(
            None,
            environ={
                "ELDERCARE_NOTIFY__TWILIO__ACCOUNT_SID": "AC1",
                "ELDERCARE_NOTIFY__TWILIO__SMS_FROM": "+15005550006",
                "ELDERCARE_NOTIFY__TWILIO__VOICE_FROM": "+15005550006",
            },
        )


def test_secret_file_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.pw"
    secret.write_text("hunter2\n")
    os.chmod(secret, 0o644)
    config = load_config(None, environ={"ELDERCARE_MQTT__PASSWORD_FILE": str(secret)})
    with pytest.raises(ConfigError, match="must not be readable by group or others"):
        mqtt_password(config)
    os.chmod(secret, 0o600)
    assert mqtt_password(config) == "hunter2"
