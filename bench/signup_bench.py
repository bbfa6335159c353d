"""Signup POSTs per second through `mailer serve` (waitress), on SQLite and PostgreSQL.

    python bench/signup_bench.py [--count 2000] [--clients 8] [--skip pg]

A real `mailer serve` process with the list in the store; --clients threads post the form
(distinct addresses, keep-alive connections) as fast as it answers. The reply does no
database work: the worker behind it stores each signup and mails its confirmation to
Postfix's smtp-sink, so the figure is the request path under that worker's load. Also
printed: how long the worker took to store every signup after the last reply.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

from common import MAILER, REPO, SMTP_SINK, make_project, sink_env, smtp_sink

sys.path.insert(0, str(REPO / "tests"))
from postgres import running_postgres, skip_reason  # noqa: E402


def post_all(port: int, count: int, clients: int) -> tuple[float, int]:
    """Seconds to post `count` signups from `clients` threads; replies other than 200."""
    bad = [0]
    lock = threading.Lock()

    def client(first: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(first, count, clients):
            body = urlencode({"email": f"reader{i:07d}@example.com", "name": f"Reader {i}"})
            head = {"Content-Type": "application/x-www-form-urlencoded"}
            conn.request("POST", "/subscribe", body=body, headers=head)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                with lock:
                    bad[0] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, bad[0]


def stored(project: Path, env: dict[str, str]) -> int:
    code = "import sys; from mailer import config; from mailer.state.ledger import open_ledger\n"
    code += "with open_ledger(config.load()) as b: print(b.count_readers())"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True
    )
    return int(out.stdout.strip() or 0)


def figures(root: Path, backend: str, url: str, extra: dict[str, str], args: object) -> None:
    count, clients = args.count, args.clients  # type: ignore[attr-defined]
    project = make_project(root / backend)
    toml_path = project / "mailer.toml"
    kept = [
        line for line in toml_path.read_text().splitlines() if not line.startswith("subscribe_url")
    ]
    toml_path.write_text("\n".join(kept) + "\n")
    with toml_path.open("a") as toml:
        toml.write('subscribers = "store"\nsubscribe_url = "https://news.example.org/subscribe"\n')
        if url:
            toml.write(f'database_url = "{url}"\n')
    with smtp_sink() as sink:
        env = sink_env(
            project / ".mailer",
            sink,
            signup_rate="10000",
            confirm_per_hour="100000",
        )
        env.update(extra)
        proc = subprocess.Popen(
            [str(MAILER), "-C", str(project), "serve", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        try:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            match = re.search(r":(\d+)/", line)
            assert match, line
            port = int(match.group(1))
            post_all(port, min(200, count), clients)  # warm-up: imports, the first ledger
            seconds, bad = post_all(port, count, clients)
            ended = time.perf_counter()
            total = min(200, count) + count
            while stored(project, env) < total and time.perf_counter() - ended < 60:
                time.sleep(0.5)
            drained = time.perf_counter() - ended
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    print(
        f"{backend:10} {count} POSTs from {clients} clients: {count / seconds:,.0f}/s"
        f" ({bad} not 200); every signup stored and mailed {drained:.1f} s after the last reply"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--skip", default="", help="comma-separated: sqlite, pg")
    args = parser.parse_args()
    if not SMTP_SINK.exists():
        print(f"{SMTP_SINK} is missing: run bench/setup.sh")
        return 1
    skip = set(filter(None, args.skip.split(",")))
    print(f"load average {os.getloadavg()[0]:.2f}")
    root = Path(tempfile.mkdtemp(prefix="mailer-bench-signup-"))
    try:
        if "sqlite" not in skip:
            figures(root, "sqlite", "", {}, args)
        if "pg" not in skip:
            reason = skip_reason()
            if reason:
                print(f"PostgreSQL skipped: {reason}")
            else:
                with running_postgres() as pg:
                    url = pg.fresh_database("bench_signup")
                    figures(root, "postgresql", url, pg.env(), args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
