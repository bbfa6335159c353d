"""`mailer serve` under slow clients: how fast /healthz and a one-click POST are answered.

Starts `mailer serve` (waitress) on 127.0.0.1, opens N slow-loris connections (each sends
the start of a request and never finishes it), then times 20 `/healthz` GETs and 20
one-click POSTs, and counts the POSTs the ledger stored. Everything stays on loopback and
the connections are closed at the end.

    .venv/bin/python bench/slow_clients_bench.py [--slow 0,2000] [--requests 20]
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from common import MAILER, REPO

from mailer.deliver import tokens
from mailer.state.ledger import Ledger

SECRET = "bench-slow-clients-secret-0123"
LIST_ID = "nlp-newsletter.example.org"
PARTIAL = b"GET /archive HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def timed(port: int, method: str, path: str, body: bytes | None = None) -> tuple[float, int]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    conn.request(method, path, body=body, headers=headers)
    status = conn.getresponse().status
    conn.close()
    return time.perf_counter() - started, status


def run(slow: int, requests: int) -> str:
    root = Path(tempfile.mkdtemp(prefix="mailer-bench-slow-"))
    (root / "issues").mkdir()
    shutil.copy(REPO / "issues" / "issue-2.md", root / "issues")
    shutil.copy(REPO / "mailer.toml", root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_SECRET"] = SECRET
    proc = subprocess.Popen(
        [str(MAILER), "-C", str(root), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        match = re.search(r":(\d+)/", proc.stdout.readline())
        assert match, "mailer serve did not start"
        port = int(match.group(1))
        for _ in range(slow):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(PARTIAL)
            socks.append(s)
        health = [timed(port, "GET", "/healthz") for _ in range(requests)]
        posts = []
        for i in range(requests):
            token = tokens.sign(SECRET, LIST_ID, f"reader{i}@example.com")
            posts.append(
                timed(
                    port,
                    "POST",
                    f"/unsubscribe?token={quote(token)}",
                    b"List-Unsubscribe=One-Click",
                )
            )
    finally:
        for s in socks:
            s.close()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    with Ledger(root / ".mailer") as ledger:
        stored = len(ledger.suppressions())
    shutil.rmtree(root, ignore_errors=True)
    ok = sum(status == 200 for _, status in health + posts)
    h_median = statistics.median(t for t, _ in health) * 1000
    h_max = max(t for t, _ in health) * 1000
    p_median = statistics.median(t for t, _ in posts) * 1000
    return (
        f"| {slow:,} slow connections | /healthz median {h_median:.1f} ms, max {h_max:.1f} ms"
        f" | one-click POST median {p_median:.1f} ms | {stored}/{requests} stored,"
        f" {ok}/{2 * requests} answered 200 |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", default="0,2000", help="comma-separated connection counts")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    for count in (int(c) for c in args.slow.split(",")):
        print(run(count, args.requests), flush=True)


if __name__ == "__main__":
    main()
