"""A private Mosquitto broker started from the installed binary, run as the ``mosquitto`` user when we are root.

Running as that user, as the packaged service does, a file the broker cannot read fails
here as it would in production (its folder is handed to that user, the files its config
names are not).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from simulators.services.process import LocalServiceError, as_root, free_port, let_through, wait_for_port


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if not found:
        raise LocalServiceError("mosquitto not found: install the 'mosquitto' package")
    return found


BROKER_USER = "mosquitto"  # the account Debian's and upstream's packages run the broker as


def _broker_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(BROKER_USER)
    except KeyError:
        raise LocalServiceError(
            f"no {BROKER_USER!r} user to run the broker as (root would hide files it cannot read): "
            "install the 'mosquitto' package"
        ) from None


@dataclass
class LocalMosquitto:
    """A private Mosquitto broker; ``extra_config`` lines are appended to its config."""

    workdir: Path
    port: int = 0
    extra_config: list[str] = field(default_factory=list)
    max_queued_messages: int = 100_000
    persistence: bool = True  # saves sessions across restarts; off for benchmarks
    anonymous: bool = True  # False: only accounts in a password_file (see gateway.provision)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 5",
            f"max_queued_messages {self.max_queued_messages}",
            "max_queued_bytes 0",
            "max_inflight_messages 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if as_root():
            lines.append(f"user {BROKER_USER}")
        return "\n".join([*lines, *self.extra_config]) + "\n"

    def start(self) -> LocalMosquitto:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        if as_root():  # its own folder (persistence) is the broker's; what extra_config names is not
            account = _broker_account()
            os.chown(self.workdir, account.pw_uid, account.pw_gid)
            for path in self.workdir.iterdir():
                os.chown(path, account.pw_uid, account.pw_gid)
            let_through(self.workdir)
        with (self.workdir / "mosquitto.log").open("ab") as log:
            self.process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(conf)],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            wait_for_port(self.port, 10, "mosquitto")
        except LocalServiceError:
            self.stop()
            raise LocalServiceError(
                f"mosquitto failed to start: {(self.workdir / 'mosquitto.log').read_text()[-500:]}"
            ) from None
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
