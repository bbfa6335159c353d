"""How long a send lasts against a server that answers 451 to every reader.

For each list size: a fresh project, aiosmtpd (tests/smtp_server.py) on 127.0.0.1 deferring
everyone, and `mailer send issue-2 --yes` at the default rate with a small retry_window. The
run should end about retry_window after its start, whatever the size of the list, with the
untried readers left pending; a run still going at --limit is stopped and reported as such.

    .venv/bin/python bench/deferral_bench.py [--counts 200,2000] [--window 10s] [--limit 600]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import ISSUE, MAILER, REPO, mailer_env, make_project, write_subscribers

sys.path.insert(0, str(REPO / "tests"))
from smtp_server import SMTPServer  # noqa: E402

_REASON = re.compile(r"(\d+) deferred, (\d+) not tried")


@dataclass(frozen=True)
class DeferralRun:
    readers: int
    wall: float  # seconds from start to exit (or to the limit)
    exit_code: int | None  # None: still running at the limit, stopped
    deferred: int | None  # as the run said; None when it said nothing
    untried: int | None


def run_one(readers: int, window: str, limit: float) -> DeferralRun:
    root = Path(tempfile.mkdtemp(prefix="mailer-bench-deferral-"))
    project = make_project(root / "project")
    write_subscribers(project / "subscribers.csv", readers)
    with SMTPServer() as server:
        server.defer.update(f"reader{i:06d}@example.com" for i in range(readers))
        env = mailer_env(
            root / "state",
            smtp_host="127.0.0.1",
            smtp_port=str(server.port),
            smtp_security="none",
            retry_window=window,
        )
        started = time.monotonic()
        proc = subprocess.Popen(
            [str(MAILER), "send", ISSUE, "--yes"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _, err = proc.communicate(timeout=limit)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            code = None
        wall = time.monotonic() - started
    said = _REASON.search(err)
    deferred, untried = (int(said[1]), int(said[2])) if said else (None, None)
    return DeferralRun(readers, wall, code, deferred, untried)


def table(runs: list[DeferralRun], window: str) -> str:
    lines = [
        f"451 for every reader, retry_window {window}, default rate (10/s, halved on throttling)",
        "",
        "| readers | wall | exit | deferred | not tried |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        code = "still running: stopped" if r.exit_code is None else str(r.exit_code)
        deferred = "-" if r.deferred is None else str(r.deferred)
        untried = "-" if r.untried is None else str(r.untried)
        lines.append(f"| {r.readers:,} | {r.wall:.1f} s | {code} | {deferred} | {untried} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="200,2000", help="list sizes, comma-separated")
    parser.add_argument("--window", default="10s", help="retry_window for the runs")
    parser.add_argument("--limit", type=float, default=600.0, help="seconds before giving up")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    runs = [run_one(n, args.window, args.limit) for n in counts]
    print(table(runs, args.window))


if __name__ == "__main__":
    main()
