"""Slow and greedy clients against a real `mailer serve` (waitress) process on 127.0.0.1.

A slow-loris client opens a connection and trickles a request that never ends. Thousands of
them must neither stall /healthz nor stop one-click unsubscribes from being stored; a request
that takes too long to arrive is cut off; past the connection limit a client is told 503 at
once instead of waiting in the kernel's backlog.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from mailer.deliver import tokens
from mailer.state.ledger import Ledger

pytestmark = pytest.mark.slow  # a real `mailer serve` process and thousands of slow clients

REPO = Path(__file__).resolve().parents[1]
SECRET = "slow-clients-test-secret"
LIST_ID = "nlp-newsletter.example.org"  # list_id in mailer.toml
PARTIAL = b"GET /archive HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "  # never finished


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "news"
    (root / "issues").mkdir(parents=True)
    shutil.copy(REPO / "issues" / "issue-2.md", root / "issues")
    shutil.copy(REPO / "mailer.toml", root)
    (root / "subscribers.csv").write_text("email\nreader@example.com\n", encoding="utf-8")
    return root


@contextlib.contextmanager
def serving(project: Path, *flags: str) -> Iterator[int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_SECRET"] = SECRET
    mailer = Path(sys.executable).with_name("mailer")
    proc = subprocess.Popen(
        [str(mailer), "-C", str(project), "serve", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"at http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        yield int(match.group(1))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def slow_clients(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(PARTIAL)
        socks.append(s)
    return socks


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_healthz_and_one_click_work_while_2000_slow_clients_hold_connections(
    project: Path,
) -> None:
    with serving(project) as port:
        socks = slow_clients(port, 2000)
        try:
            assert get(port, "/healthz") == (200, b"ok")
            for i in range(5):
                token = tokens.sign(SECRET, LIST_ID, f"reader{i}@example.com")
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request(
                    "POST",
                    f"/unsubscribe?token={quote(token)}",
                    body=b"List-Unsubscribe=One-Click",
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                assert conn.getresponse().status == 200
                conn.close()
            assert get(port, "/healthz") == (200, b"ok")
        finally:
            for s in socks:
                s.close()
    with Ledger(project / ".mailer") as ledger:
        assert sorted(s.email for s in ledger.suppressions()) == [
            f"reader{i}@example.com" for i in range(5)
        ]


def test_a_request_that_takes_too_long_to_arrive_is_cut_off(project: Path) -> None:
    with serving(project, "--request-timeout", "1") as port:
        (s,) = slow_clients(port, 1)
        with s:
            s.settimeout(15)
            received = b""
            with contextlib.suppress(ConnectionResetError):
                for _ in range(100):  # a byte a while, as a slow loris does, until cut off
                    s.sendall(b"x")
                    try:
                        s.settimeout(0.2)
                        chunk = s.recv(1024)
                    except TimeoutError:
                        continue
                    received += chunk
                    if not chunk:
                        break
            assert received == b""  # closed without an answer, long before 100 rounds
        assert get(port, "/healthz") == (200, b"ok")


def test_past_the_connection_limit_a_client_is_answered_503_at_once(project: Path) -> None:
    with serving(project, "--max-connections", "16") as port:
        socks = slow_clients(port, 16)
        try:
            extra = socket.create_connection(("127.0.0.1", port), timeout=10)
            with extra:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while chunk := extra.recv(4096):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
            assert b"\r\nRetry-After: 5\r\n" in answer
        finally:
            for s in socks:
                s.close()
