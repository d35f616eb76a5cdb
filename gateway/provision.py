"""Device credentials and the broker's access rules: one account per device, least privilege.

``eldercare provision`` maintains a Mosquitto password file (hashed, written with
``mosquitto_passwd``) and an ACL file. The ACL needs no line per device: Mosquitto's
``pattern`` rules substitute the username, and a device's username is its id, so
every device may write only ``eldercare/v1/+/<its id>/#`` and read only its own
``cmd``. The gateway has its own account that reads the three device channels and
writes ``cmd``. A new or rotated password is printed once, to be put on the device;
only the hash is kept. After a change, send the broker SIGHUP to reload both files.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

from devices.contracts import DEVICE_ID_PATTERN, TOPIC_PREFIX

_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
GATEWAY_USER = "eldercare-gateway"


class ProvisionError(RuntimeError):
    """A credential could not be created, rotated or revoked; the message says why."""


def acl_text(gateway_user: str = GATEWAY_USER) -> str:
    return f"""# eldercare-gateway broker ACL (written by `eldercare provision`; edits are overwritten)
# The gateway: reads what devices publish, writes their commands.
user {gateway_user}
topic read {TOPIC_PREFIX}/+/+/telemetry
topic read {TOPIC_PREFIX}/+/+/event
topic read {TOPIC_PREFIX}/+/+/status
topic write {TOPIC_PREFIX}/+/+/cmd

# Every device (username = device id): its own topics only.
pattern write {TOPIC_PREFIX}/+/%u/telemetry
pattern write {TOPIC_PREFIX}/+/%u/event
pattern write {TOPIC_PREFIX}/+/%u/status
pattern read {TOPIC_PREFIX}/+/%u/cmd
"""


def _passwd_binary() -> str:
    found = shutil.which("mosquitto_passwd")
    if not found:
        raise ProvisionError("mosquitto_passwd not found: install the 'mosquitto' package")
    return found


def new_password() -> str:
    return secrets.token_urlsafe(18)


class BrokerCredentials:
    """The password and ACL files of one broker."""

    def __init__(self, passwd_file: Path, acl_file: Path, gateway_user: str = GATEWAY_USER) -> None:
        self.passwd_file = passwd_file
        self.acl_file = acl_file
        self.gateway_user = gateway_user

    def _write_acl(self) -> None:
        self.acl_file.parent.mkdir(parents=True, exist_ok=True)
        self.acl_file.write_text(acl_text(self.gateway_user))

    def _set(self, user: str, password: str) -> None:
        self.passwd_file.parent.mkdir(parents=True, exist_ok=True)
        if not self.passwd_file.exists():
            self.passwd_file.touch(mode=0o600)
        os.chmod(self.passwd_file, 0o600)
        result = subprocess.run(
            [_passwd_binary(), "-b", str(self.passwd_file), user, password], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ProvisionError(f"mosquitto_passwd failed for {user}: {result.stderr.strip()}")
        self._write_acl()

    def users(self) -> list[str]:
        if not self.passwd_file.exists():
            return []
        return [line.split(":", 1)[0] for line in self.passwd_file.read_text().splitlines() if ":" in line]

    def add_gateway(self, password: str | None = None) -> str:
        """The gateway's own account; returns its password."""
        password = password or new_password()
        self._set(self.gateway_user, password)
        return password

    def add_device(self, device_id: str) -> str:
        """A new device account; returns the password to put on the device (shown once)."""
        if not _DEVICE_ID.match(device_id):
            raise ProvisionError(f"device id {device_id!r} is not 1-64 letters, digits, '_', '.', '-'")
        if device_id == self.gateway_user:
            raise ProvisionError(f"{device_id!r} is the gateway's own account")
        if device_id in self.users():
            raise ProvisionError(f"device {device_id} already has credentials; use rotate")
        password = new_password()
        self._set(device_id, password)
        return password

    def rotate(self, device_id: str) -> str:
        if device_id not in self.users():
            raise ProvisionError(f"device {device_id} has no credentials to rotate")
        password = new_password()
        self._set(device_id, password)
        return password

    def revoke(self, device_id: str) -> None:
        if device_id not in self.users():
            raise ProvisionError(f"device {device_id} has no credentials to revoke")
        result = subprocess.run(
            [_passwd_binary(), "-D", str(self.passwd_file), device_id], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ProvisionError(f"mosquitto_passwd could not revoke {device_id}: {result.stderr.strip()}")


def broker_config_lines(credentials: BrokerCredentials) -> list[str]:
    """The mosquitto.conf lines that make the broker enforce these files."""
    return ["allow_anonymous false", f"password_file {credentials.passwd_file}", f"acl_file {credentials.acl_file}"]
