"""A private PostgreSQL cluster (own data directory, free port) from the installed server binaries.

initdb and pg_ctl refuse to run as root, so when we are root they run as ``postgres``.
``bindir`` points at another server tree (one with TimescaleDB built in, say).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from simulators.services.process import LocalServiceError, as_root, free_port, let_through


def let_postgres_in(workdir: Path) -> None:
    """Make ``workdir`` writable and its parents traversable for the postgres user.

    The server runs as postgres; temporary directories made by root are private
    (0700), so each parent we own gets the search bit and nothing more.
    """
    os.chmod(workdir, 0o777)
    let_through(workdir)


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
        cmd = ["runuser", "-u", "postgres", "--", *args] if as_root() else args
        result = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise LocalServiceError(
                f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.decode(errors='replace')[-800:]}"
            )
        return result

    def start(self) -> LocalPostgres:
        bindir = self.binaries
        self.workdir.mkdir(parents=True, exist_ok=True)
        if as_root():
            let_postgres_in(self.workdir)
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
        if self._psql("-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{self.dbname}'") != b"1":
            self._psql("-qc", f"CREATE DATABASE {self.dbname}")
        return self

    def _psql(self, flags: str, sql: str) -> bytes:
        """Run one statement in the maintenance database; its output, stripped."""
        args = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres", flags, sql]
        return self._run([str(self.binaries / "psql"), *args]).stdout.strip()

    def stop(self, mode: str = "fast") -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run([str(self.binaries / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"])
