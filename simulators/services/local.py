"""Private Mosquitto and PostgreSQL instances started from the installed binaries.

Tests, benchmarks and the demo each get their own broker and database (own data
directory, free port on loopback) so they never touch, or depend on, services that
happen to run on the machine. initdb and pg_ctl refuse to run as root, so when we
are root they run as the ``postgres`` user; Mosquitto then runs as ``mosquitto``, as
the packaged service does, so a file it cannot read fails here as it would in
production (its folder is handed to that user, the files its config names are not).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


class LocalServiceError(RuntimeError):
    """A private service could not be started; the message says which and why."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise LocalServiceError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _let_postgres_in(workdir: Path) -> None:
    """Make ``workdir`` writable and its parents traversable for the postgres user.

    The server runs as postgres; temporary directories made by root are private
    (0700), so each parent we own gets the search bit and nothing more.
    """
    os.chmod(workdir, 0o777)
    _let_through(workdir)


def _let_through(workdir: Path) -> None:
    """Give each parent of ``workdir`` that we own the search bit, so another user can reach it."""
    for parent in workdir.parents:
        st = parent.stat()
        if st.st_uid == os.geteuid() and not st.st_mode & 0o001:
            os.chmod(parent, (st.st_mode & 0o7777) | 0o011)


def postgres_bindir() -> Path:
    """Directory of the newest installed PostgreSQL server binaries."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    for directory in reversed(candidates):
        if Path(directory, "initdb").exists():
            return Path(directory)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise LocalServiceError("PostgreSQL server binaries (initdb) not found: install the 'postgresql' package")


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
        if _as_root():
            lines.append(f"user {BROKER_USER}")
        return "\n".join([*lines, *self.extra_config]) + "\n"

    def start(self) -> LocalMosquitto:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        if _as_root():  # its own folder (persistence) is the broker's; what extra_config names is not
            account = _broker_account()
            os.chown(self.workdir, account.pw_uid, account.pw_gid)
            for path in self.workdir.iterdir():
                os.chown(path, account.pw_uid, account.pw_gid)
            _let_through(self.workdir)
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


@dataclass
class LocalPostgres:
    """A private PostgreSQL cluster in ``workdir``, reachable on 127.0.0.1:``port``."""

    workdir: Path
    port: int = 0
    fsync: bool = True
    dbname: str = "eldercare"
    bindir: Path | None = None  # another server tree (e.g. one with TimescaleDB); default: the newest installed
    settings: dict[str, str] = field(default_factory=dict)  # extra postgresql.conf settings (-c name=value)

    @property
    def binaries(self) -> Path:
        return self.bindir or postgres_bindir()

    @property
    def datadir(self) -> Path:
        return self.workdir / "pgdata"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.dbname}"

    def _run(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        cmd = ["runuser", "-u", "postgres", "--", *args] if _as_root() else args
        result = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise LocalServiceError(
                f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.decode(errors='replace')[-800:]}"
            )
        return result

    def start(self) -> LocalPostgres:
        bindir = self.binaries
        self.workdir.mkdir(parents=True, exist_ok=True)
        if _as_root():
            _let_postgres_in(self.workdir)
        if not self.port:
            self.port = free_port()
        if not (self.datadir / "PG_VERSION").exists():
            self._run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ]
            )
        opts = (
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=100 "
            "-c shared_buffers=128MB"
        ) + "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.workdir / "pg.log"),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        self._run(
            [
                str(bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-qc",
                f"CREATE DATABASE {self.dbname}",
            ]
        ) if not self._database_exists() else None
        return self

    def _database_exists(self) -> bool:
        bindir = self.binaries
        out = self._run(
            [
                str(bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname = '{self.dbname}'",
            ]
        )
        return out.stdout.strip() == b"1"

    def stop(self, mode: str = "fast") -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run([str(self.binaries / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"])


@contextlib.contextmanager
def private_services(
    prefix: str = "eldercare-",
    fsync: bool = False,
    *,
    max_queued_messages: int = 100_000,
    broker_persistence: bool = True,
) -> Iterator[tuple[LocalMosquitto, LocalPostgres]]:
    """Start a broker and a database in one temporary directory; stop and remove both."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    broker = LocalMosquitto(root / "mosquitto", max_queued_messages=max_queued_messages, persistence=broker_persistence)
    database = LocalPostgres(root / "postgres", fsync=fsync)
    try:
        broker.start()
        database.start()
        yield broker, database
    finally:
        broker.stop()
        with contextlib.suppress(LocalServiceError):
            database.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
