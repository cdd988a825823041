"""A real, throwaway PostgreSQL server for the tests: Debian's package, installed when missing.

Why a real server: concurrency, heartbeats and duplicate-creation races only show against the
database workers really share. The server lives in a temp dir on a free localhost port, runs as the
`postgres` user (the server refuses to run as root), and is stopped and deleted at the end.
The test user has a password, so tests can check it never leaks.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "s3cret-Pw-7f2e"  # tests assert this string never appears in output or files


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str) -> str:
        """The README's form exactly, no driver named: SQLAlchemy maps postgresql:// to psycopg 3."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        # CREATE DATABASE cannot run inside a transaction: autocommit
        with psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                             dbname="postgres", autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return name


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def ensure_installed() -> Path:
    """The server binaries' folder, installing Debian's postgresql package first if it is missing.
    Raises RuntimeError (the fixture turns it into a skip with the reason) when that is impossible."""
    if (found := _bin_dir()) is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError("PostgreSQL is not installed and this is not a root Debian shell: apt-get install postgresql")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "postgresql"]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {(r.stderr or r.stdout).strip()[-300:]}")
    if (found := _bin_dir()) is None:
        raise RuntimeError("apt-get installed postgresql but no initdb was found under /usr/lib/postgresql")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def start(user: str = "nas") -> tuple[Server, callable]:
    """Start a server; returns it and a function that stops it and deletes its files."""
    bin_dir = ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="nas-pg-"))  # not under pytest's 0700 tmp: postgres must reach it
    data, pwfile = root / "data", root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
    port = _free_port()
    run = lambda cmd: subprocess.run(_as_postgres(cmd), capture_output=True, text=True, timeout=120, check=True)  # noqa: E731
    # the superuser is `user` itself, with a password; local sockets are trusted only inside root/
    run([str(bin_dir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
         "--auth-local=scram-sha-256", "-E", "UTF8", "--no-sync"])
    run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "-o",
         f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off", "start"])

    def stop() -> None:
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)

    return Server("127.0.0.1", port, user, PASSWORD), stop
