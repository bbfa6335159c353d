"""A throwaway PostgreSQL cluster from Debian's packages, for tests that need a real database.

initdb makes a fresh cluster in a temporary folder; it listens on one free port on 127.0.0.1
only (and on a unix socket in that folder), with fsync and the like turned off for speed. A
login role `mailer` (a random password, checked with SCRAM over TCP) owns a database `mailer`;
`fresh_database()` makes more, one per test. The superuser `postgres` is reached through the
unix socket only (trust there, no password). Everything is stopped and removed afterwards.

PostgreSQL refuses to run as root, so initdb and pg_ctl run as the `postgres` system user:
needs root (to switch to it), Debian's postgresql (`make system`) and psycopg.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

if TYPE_CHECKING:
    import psycopg

SYSTEM_USER = "postgres"  # runs the server; also the name of the cluster's superuser
ROLE = "mailer"  # the login role (and its database) the code under test uses


def _bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb, pg_ctl and postgres."""
    found = [
        Path(p).parent
        for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
        if all((Path(p).parent / n).exists() for n in ("pg_ctl", "postgres"))
    ]
    found.sort(key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0)
    return found[-1] if found else None


BIN = _bin_dir()
RUNUSER = shutil.which("runuser", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/runuser"


def _system_user_exists() -> bool:
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return False
    return True


requires_postgres = [
    pytest.mark.skipif(
        BIN is None or not Path(RUNUSER).exists(),
        reason="PostgreSQL is not installed: `make system` installs Debian's postgresql",
    ),
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="a throwaway PostgreSQL is started as root (which switches to the postgres user)",
    ),
    pytest.mark.skipif(
        not _system_user_exists(),
        reason="no `postgres` system user: `make system` installs Debian's postgresql",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("psycopg") is None,
        reason="psycopg is not installed: `pip install -e '.[postgres]'`",
    ),
]


def skip_reason() -> str | None:
    """Why a throwaway PostgreSQL cannot run here (the first skip mark that applies), or None."""
    for mark in requires_postgres:
        if mark.args[0]:
            return str(mark.kwargs["reason"])
    return None


@dataclass
class Postgres:
    host: str  # always 127.0.0.1
    port: int
    user: str  # the login role, "mailer"
    password: str = field(repr=False)  # give it as PGPASSWORD: never in a URL (nor a repr)
    database: str  # "mailer", owned by `user`
    socket_dir: Path  # the unix socket: the superuser's way in (trust, no password)
    data_dir: Path
    logfile: Path
    superuser: str = SYSTEM_USER

    def url_for(self, database: str) -> str:
        """postgresql://mailer@127.0.0.1:PORT/<database>, without the password."""
        return f"postgresql://{quote(self.user)}@{self.host}:{self.port}/{quote(database, safe='')}"

    @property
    def url(self) -> str:
        """postgresql://mailer@127.0.0.1:PORT/mailer: pass the password as PGPASSWORD."""
        return self.url_for(self.database)

    @property
    def admin_url(self) -> str:
        """The superuser, through the unix socket (no password needed), database postgres."""
        return (
            f"postgresql://{quote(self.superuser)}@/postgres"
            f"?host={quote(str(self.socket_dir), safe='')}&port={self.port}"
        )

    def env(self) -> dict[str, str]:
        """The environment variables libpq (psycopg, psql, mailer) reads the password from."""
        return {"PGPASSWORD": self.password}

    def admin(self, database: str = "postgres") -> psycopg.Connection:
        """An autocommit superuser connection over the unix socket: use it as `with ...:`."""
        import psycopg

        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=self.superuser,
            dbname=database,
            autocommit=True,
            connect_timeout=10,
        )

    def fresh_database(self, name: str) -> str:
        """A new, empty database `name` owned by `mailer`; returns its URL (no password)."""
        from psycopg import sql

        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(self.user)
                )
            )
        return self.url_for(name)

    def log(self) -> str:
        """The server's log (startup, errors, refused logins): for failure messages."""
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*args: str | Path, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a PostgreSQL program as the postgres system user, in a clean PG*-free environment."""
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LC_ALL": "C.UTF-8",
        "HOME": str(cwd),  # not root's home, which postgres cannot read
    }
    return subprocess.run(
        [RUNUSER, "-u", SYSTEM_USER, "--", *(str(a) for a in args)],
        cwd=cwd,  # a folder the postgres user can enter (pg_ctl wants its working directory)
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _settings(socket_dir: Path) -> str:
    """Appended to postgresql.conf; the port is given on pg_ctl's command line."""
    return (
        "\n# mailer tests: a throwaway cluster\n"
        "listen_addresses = '127.0.0.1'\n"
        f"unix_socket_directories = '{socket_dir}'\n"
        "fsync = off\n"
        "synchronous_commit = off\n"
        "full_page_writes = off\n"
        "max_connections = 50\n"
        "shared_buffers = 32MB\n"
        "log_connections = on\n"  # refused logins and who connected: in log()
        "log_line_prefix = '%m [%p] %q%u@%d '\n"
    )


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster, started; stopped and removed after the block (also on error).

    The role `mailer` has a random password (`server.password`) and owns the database `mailer`.
    """
    assert BIN is not None, skip_reason()
    import psycopg
    from psycopg import sql

    # Not under tmp_path: pytest makes its temp folders 0700 for root, which the postgres user
    # could not enter. The folder is root's, 0755; what the server writes is the postgres user's.
    base = Path(tempfile.mkdtemp(prefix="mailer-postgres-"))
    data_dir, socket_dir, logfile = base / "data", base / "run", base / "postgres.log"
    server = Postgres(
        host="127.0.0.1",
        port=0,  # chosen just before the start
        user=ROLE,
        password=secrets.token_urlsafe(24),
        database=ROLE,
        socket_dir=socket_dir,
        data_dir=data_dir,
        logfile=logfile,
    )
    started = False
    try:
        base.chmod(0o755)
        owner = pwd.getpwnam(SYSTEM_USER)
        for folder in (data_dir, socket_dir):
            folder.mkdir(mode=0o700)
            os.chown(folder, owner.pw_uid, owner.pw_gid)
        logfile.touch(mode=0o600)
        os.chown(logfile, owner.pw_uid, owner.pw_gid)
        done = _as_postgres(
            BIN / "initdb",
            "--pgdata",
            data_dir,
            "--username",
            SYSTEM_USER,
            "--encoding",
            "UTF8",
            "--locale",
            "C.UTF-8",
            "--auth-host",
            "scram-sha-256",
            "--auth-local",
            "trust",
            "--no-sync",  # fsync is off anyway: the cluster is thrown away
            "--no-instructions",
            cwd=base,
        )
        assert done.returncode == 0, (
            f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
        with (data_dir / "postgresql.conf").open("a") as conf:
            conf.write(_settings(socket_dir))
        # A free port may be taken by someone else before the server binds it: try again.
        for attempt in range(3):
            server.port = _free_port()
            done = _as_postgres(
                BIN / "pg_ctl",
                "start",
                "--wait",
                "--timeout",
                "30",
                "--pgdata",
                data_dir,
                "--log",
                logfile,
                "--options",
                f"-p {server.port}",
                cwd=base,
            )
            started = done.returncode == 0
            if started or "already in use" not in server.log() or attempt == 2:
                break
            _stop(server, base)
        assert started, (
            f"pg_ctl start failed ({done.returncode}):\n{done.stdout}{done.stderr}\n{server.log()}"
        )
        with server.admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(server.user), sql.Literal(server.password)
                )
            )
        server.fresh_database(server.database)
        # The role must really be able to log in over TCP with its password (SCRAM).
        with psycopg.connect(server.url, password=server.password, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
        yield server
    finally:
        if started or (data_dir / "postmaster.pid").exists():
            _stop(server, base)
        shutil.rmtree(base, ignore_errors=True)


def _stop(server: Postgres, base: Path) -> None:
    """pg_ctl stop -m immediate (it waits for the postmaster to go); if that fails, SIGKILL."""
    assert BIN is not None
    pid_file = server.data_dir / "postmaster.pid"
    try:
        pid: int | None = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pid = None
    done = _as_postgres(
        BIN / "pg_ctl", "stop", "--pgdata", server.data_dir, "-m", "immediate", "--wait", cwd=base
    )
    if done.returncode != 0 and pid is not None:
        # The backends notice their postmaster's death and exit by themselves.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
