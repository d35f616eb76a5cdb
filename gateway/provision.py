"""Device credentials and the broker's access rules: one account per device, least privilege.

``eldercare provision`` maintains a Mosquitto password file (hashed, written with
``mosquitto_passwd``) and an ACL file. A device's username is its id, and its ACL
block names its registered type: a wristband ``wb-1`` may write only
``eldercare/v1/wristband/wb-1/{telemetry,event,status}`` and read only that ``cmd``.
A ``pattern`` rule (``+/%u/#``) would let it publish as another type, e.g. an SOS on
``pager/wb-1/event``, so there is one block per device; the ACL file is also where the
types are kept (read back from the topics on each change). The gateway has its own
account that reads the three device channels and writes ``cmd``. Accounts made by an
older version have no type yet and get none of the device topics until given one
(``eldercare provision type``); every change says which. A new or rotated password
is printed once, to be put on the device; only the hash is kept. After a change,
send the broker SIGHUP to reload both files.

Mosquitto 2.0 drops to its own user (``mosquitto``) before it opens these files, so a
file only root can read stops the broker ("Unable to open pwfile"). Run as root,
provision hands both files to that user (owner mosquitto, mode 0600: only the broker
and root read the hashes; Mosquitto warns about any other owner). Run as anyone
else, it cannot, and says so (``BrokerCredentials.warnings``).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
from pathlib import Path

from devices.contracts import CHANNELS, CONTRACTS, DEVICE_ID_PATTERN, DEVICE_TYPES, TOPIC_PREFIX

_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
GATEWAY_USER = "eldercare-gateway"
BROKER_USER = "mosquitto"  # the account the packaged broker runs as


class ProvisionError(RuntimeError):
    """A credential could not be created, rotated or revoked; the message says why."""


def acl_text(devices: dict[str, str] | None = None, gateway_user: str = GATEWAY_USER) -> str:
    """The ACL for the gateway and ``devices`` (id -> registered type), one block per device."""
    lines = [
        "# eldercare-gateway broker ACL (written by `eldercare provision`; edits are overwritten)",
        "# The gateway: reads what devices publish, writes their commands.",
        f"user {gateway_user}",
        *(f"topic read {TOPIC_PREFIX}/+/+/{channel}" for channel in CHANNELS),
        f"topic write {TOPIC_PREFIX}/+/+/cmd",
        "",
        "# Each device (username = device id): its own topics, of its own type only.",
    ]
    for device_id, device_type in sorted((devices or {}).items()):
        base = f"{TOPIC_PREFIX}/{device_type}/{device_id}"
        lines += [
            f"user {device_id}",
            *(f"topic write {base}/{channel}" for channel in CHANNELS if (device_type, channel) in CONTRACTS),
            f"topic read {base}/cmd",
        ]
    return "\n".join(lines) + "\n"


def acl_device_types(text: str) -> dict[str, str]:
    """Device id -> type, read back from the topics of an ACL that ``acl_text`` wrote."""
    found: dict[str, str] = {}
    user = None
    prefix = TOPIC_PREFIX.split("/")
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "user":
            user = words[1]
        elif len(words) == 3 and words[0] == "topic" and user is not None:
            parts = words[2].split("/")
            if len(parts) == 5 and parts[:2] == prefix and parts[3] == user and parts[2] in DEVICE_TYPES:
                found[user] = parts[2]
    return found


def _passwd_binary() -> str:
    found = shutil.which("mosquitto_passwd")
    if not found:
        raise ProvisionError("mosquitto_passwd not found: install the 'mosquitto' package")
    return found


def new_password() -> str:
    return secrets.token_urlsafe(18)


def hand_to_broker(path: Path, broker_user: str = BROKER_USER) -> str | None:
    """Make ``path`` readable by the broker's user alone (0600, owned by it); why not, or None.

    Also what an operator does with the TLS key the broker's config names.
    """
    os.chmod(path, 0o600)
    if os.geteuid() != 0:
        who = pwd.getpwuid(os.geteuid()).pw_name
        if who == broker_user:
            return None
        return (
            f"{path} is owned by {who}, not {broker_user}: a broker running as {broker_user} cannot read it; "
            f"run provision as root, or: chown {broker_user} {path}"
        )
    try:
        account = pwd.getpwnam(broker_user)
    except KeyError:
        return f"no user {broker_user!r}: {path} stays readable by root only (is Mosquitto installed?)"
    os.chown(path, account.pw_uid, account.pw_gid)
    return None


class BrokerCredentials:
    """The password and ACL files of one broker."""

    def __init__(
        self, passwd_file: Path, acl_file: Path, gateway_user: str = GATEWAY_USER, broker_user: str = BROKER_USER
    ) -> None:
        self.passwd_file = passwd_file
        self.acl_file = acl_file
        self.gateway_user = gateway_user
        self.broker_user = broker_user
        self.warnings: list[str] = []  # files the broker may not be able to read, and why

    def _hand_over(self, path: Path) -> None:
        problem = hand_to_broker(path, self.broker_user)
        if problem and problem not in self.warnings:
            self.warnings.append(problem)

    def device_types(self) -> dict[str, str]:
        """Device id -> type, as the ACL file holds them."""
        if not self.acl_file.exists():
            return {}
        return acl_device_types(self.acl_file.read_text())

    def untyped(self) -> list[str]:
        """Device accounts without a type (from an older version): the broker lets them publish nothing."""
        types = self.device_types()
        return [u for u in self.users() if u != self.gateway_user and u not in types]

    def _write_acl(self, types: dict[str, str]) -> None:
        users = set(self.users())
        self.acl_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.acl_file.with_name(self.acl_file.name + ".tmp")
        tmp.write_text(acl_text({d: t for d, t in types.items() if d in users}, self.gateway_user))
        os.replace(tmp, self.acl_file)  # a broker reloading mid-write reads the old or the new file
        self._hand_over(self.acl_file)
        untyped = self.untyped()
        if untyped:
            shown = ", ".join(untyped[:10]) + (f" and {len(untyped) - 10} more" if len(untyped) > 10 else "")
            problem = (
                f"{len(untyped)} device account(s) have no type and may publish nothing: {shown}; "
                "give each its registered type: eldercare provision type TYPE DEVICE..."
            )
            if problem not in self.warnings:
                self.warnings.append(problem)

    def _set(self, user: str, password: str, device_type: str | None = None) -> None:
        self._set_many({user: password}, device_type)

    def _set_many(self, passwords: dict[str, str], device_type: str | None) -> None:
        """Hash each password in; the ACL is written once, also when a later one fails."""
        self.passwd_file.parent.mkdir(parents=True, exist_ok=True)
        if not self.passwd_file.exists():
            self.passwd_file.touch(mode=0o600)
        os.chmod(self.passwd_file, 0o600)
        types = self.device_types()
        try:
            for user, password in passwords.items():
                result = subprocess.run(
                    [_passwd_binary(), "-b", str(self.passwd_file), user, password],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if result.returncode != 0:
                    raise ProvisionError(f"mosquitto_passwd failed for {user}: {result.stderr.strip()}")
                if device_type is not None:
                    types[user] = device_type
        finally:
            self._hand_over(self.passwd_file)  # mosquitto_passwd rewrites the file: hand it over each time
            self._write_acl(types)

    def users(self) -> list[str]:
        if not self.passwd_file.exists():
            return []
        return [line.split(":", 1)[0] for line in self.passwd_file.read_text().splitlines() if ":" in line]

    def add_gateway(self, password: str | None = None) -> str:
        """The gateway's own account; returns its password."""
        password = password or new_password()
        self._set(self.gateway_user, password)
        return password

    def add_device(self, device_id: str, device_type: str) -> str:
        """A new device account of ``device_type``; returns the password to put on the device (shown once)."""
        return self.add_devices([device_id], device_type)[device_id]

    def add_devices(self, device_ids: list[str], device_type: str) -> dict[str, str]:
        """New accounts of one type, all checked first; the ACL is rewritten once, not once per device."""
        _check_type(device_type)
        existing = set(self.users())
        for device_id in device_ids:
            if not _DEVICE_ID.match(device_id):
                raise ProvisionError(f"device id {device_id!r} is not 1-64 letters, digits, '_', '.', '-'")
            if device_id == self.gateway_user:
                raise ProvisionError(f"{device_id!r} is the gateway's own account")
            if device_id in existing:
                raise ProvisionError(f"device {device_id} already has credentials; use rotate")
            existing.add(device_id)  # named twice in one call
        passwords = {device_id: new_password() for device_id in device_ids}
        self._set_many(passwords, device_type)
        return passwords

    def set_type(self, device_id: str, device_type: str) -> None:
        """Give an account (one from an older version, or a device re-registered) its type; the password stays."""
        _check_type(device_type)
        if device_id not in self.users() or device_id == self.gateway_user:
            raise ProvisionError(f"device {device_id} has no credentials; use add")
        types = self.device_types()
        types[device_id] = device_type
        self._write_acl(types)

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
        self._hand_over(self.passwd_file)
        self._write_acl(self.device_types())  # its block goes with it


def _check_type(device_type: str) -> None:
    if device_type not in DEVICE_TYPES:
        raise ProvisionError(f"unknown device type {device_type!r} (known: {', '.join(DEVICE_TYPES)})")


def broker_config_lines(credentials: BrokerCredentials) -> list[str]:
    """The mosquitto.conf lines that make the broker enforce these files."""
    return ["allow_anonymous false", f"password_file {credentials.passwd_file}", f"acl_file {credentials.acl_file}"]
