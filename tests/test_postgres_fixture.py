"""The throwaway PostgreSQL of postgres.py and its fixtures (postgres_server, postgres_url).

mailer reads the password the way libpq does, from PGPASSWORD, never from the URL: so the
fixtures hand out URLs without one, and these tests connect the same way.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import psycopg
import pytest
from conftest import postgres_env
from postgres import Postgres, requires_postgres, running_postgres

pytestmark = requires_postgres


def test_url_holds_no_password(postgres_server: Postgres, postgres_url: str) -> None:
    port = postgres_server.port
    assert postgres_server.url == f"postgresql://mailer@127.0.0.1:{port}/mailer"
    assert postgres_url.startswith(f"postgresql://mailer@127.0.0.1:{port}/t")
    for text in (postgres_url, postgres_server.url, postgres_server.admin_url):
        assert postgres_server.password not in text
    assert postgres_server.password not in repr(postgres_server)


def test_connects_with_the_url_and_pgpassword(
    postgres_server: Postgres, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    with psycopg.connect(postgres_url, connect_timeout=10) as conn:
        user, database, address, encoding, version = conn.execute(
            "SELECT current_user, current_database(), host(inet_server_addr()),"
            " pg_encoding_to_char(encoding), current_setting('server_version_num')::int"
            " FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        assert (user, address, encoding) == ("mailer", "127.0.0.1", "UTF8")
        assert postgres_url.endswith("/" + database)
        assert version >= 150000
        # the role owns its database: it can create tables in the public schema
        conn.execute("CREATE TABLE t (x text)")
        conn.execute("INSERT INTO t VALUES ('Zoë')")
        assert conn.execute("SELECT upper(x) FROM t").fetchone() == ("ZOË",)
    # the default database `mailer` too, with the environment a subprocess would get
    env = postgres_env(postgres_server)
    assert env == {"PGPASSWORD": postgres_server.password}
    with psycopg.connect(postgres_server.url, connect_timeout=10) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("mailer",)


def test_a_wrong_or_missing_password_is_refused(
    postgres_server: Postgres, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", postgres_server.password + "x")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres_url, connect_timeout=10)
    assert 'password authentication failed for user "mailer"' in postgres_server.log()
    monkeypatch.delenv("PGPASSWORD")
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(postgres_url, connect_timeout=10)


def test_the_superuser_is_reachable_through_the_unix_socket_only(
    postgres_server: Postgres, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with postgres_server.admin() as conn:
        assert conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (True,)
    with psycopg.connect(postgres_server.admin_url, connect_timeout=10) as conn:
        assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,)  # a unix socket
    # over TCP the superuser needs a password, and it has none
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    url = postgres_url.replace("mailer@", "postgres@", 1)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url, connect_timeout=10)
    with postgres_server.admin() as conn:  # the password is stored as a SCRAM verifier
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'mailer'")
        assert stored.fetchone()[0].startswith("SCRAM-SHA-256$")
    # and `mailer` is no superuser
    with psycopg.connect(postgres_url, connect_timeout=10) as conn:
        assert conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (False, False, False)


def _listening(port: int) -> list[str]:
    """The local addresses of the TCP sockets listening on `port` (from /proc/net/tcp{,6})."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


def test_nothing_listens_on_anything_but_127_0_0_1(postgres_server: Postgres) -> None:
    port = postgres_server.port
    with postgres_server.admin() as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
    assert _listening(port) == ["0100007F"]  # 127.0.0.1, little-endian; no 0.0.0.0, no [::]
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    # 127.0.0.2 is loopback too, but nothing is bound to it; ::1 neither
    others = [(socket.AF_INET, "127.0.0.2")]
    if socket.has_ipv6:
        others.append((socket.AF_INET6, "::1"))
    for family, address in others:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            code = s.connect_ex((address, port))
            # ECONNREFUSED; EADDRNOTAVAIL/ENETUNREACH where the host has no IPv6 loopback
            assert code in (errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.ENETUNREACH), (
                address,
                os.strerror(code),
            )


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_its_own_empty_database(
    run: int, postgres_server: Postgres, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    with psycopg.connect(postgres_url, connect_timeout=10) as conn:
        # the other run's table is not here: CREATE TABLE would fail if it were
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog',"
            " 'information_schema')"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE marker (run int)")
        conn.execute("INSERT INTO marker VALUES (%s)", [run])


def test_two_fresh_databases_are_independent(
    postgres_server: Postgres, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    other = postgres_server.fresh_database("independent_other")
    assert other != postgres_url
    assert other == f"postgresql://mailer@127.0.0.1:{postgres_server.port}/independent_other"
    for url, rows in ((postgres_url, ["a", "b"]), (other, ["c"])):
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.execute("CREATE TABLE ledger (email text PRIMARY KEY)")
            for row in rows:
                conn.execute("INSERT INTO ledger VALUES (%s)", [row])
    for url, rows in ((postgres_url, [("a",), ("b",)]), (other, [("c",)])):
        with psycopg.connect(url, connect_timeout=10) as conn:
            assert conn.execute("SELECT email FROM ledger ORDER BY email").fetchall() == rows
    with postgres_server.admin() as conn:
        owners = conn.execute(
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = ANY(%s)",
            [[postgres_url.rsplit("/", 1)[1], "independent_other"]],
        ).fetchall()
    assert sorted(owner for _, owner in owners) == ["mailer", "mailer"]


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status  # a zombie is gone already, only not yet reaped


def test_running_postgres_stops_and_removes_everything_also_on_failure() -> None:
    with pytest.raises(RuntimeError, match="boom"), running_postgres() as server:
        base = server.data_dir.parent
        pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        assert _alive(pid)
        port = server.port
        raise RuntimeError("boom")
    assert not base.exists()
    assert not _alive(pid)
    assert _listening(port) == []
