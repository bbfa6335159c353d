"""(j) Several senders on PostgreSQL against one on SQLite, into the same smtp-sink; and what a
claim costs per message.

Each run: a fresh database (or state folder), N `mailer send` processes started together on
one list, rate off, one connection each; msg/s is the list over the wall time from the
first start to the last exit. The claim overhead: in process, the outbox of a list laid
out once, then claimed 50 at a time until empty, and each reader recorded (which also takes
it out of the outbox), against the same records on SQLite.

Needs root and Debian's postgresql (the test suite's throwaway cluster, tests/postgres.py).

    .venv/bin/python bench/senders_bench.py [--count 4000]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import ISSUE, MAILER, REPO, make_project, sink_env, smtp_sink, write_subscribers

sys.path.insert(0, str(REPO / "tests"))
from postgres import Postgres, running_postgres, skip_reason  # noqa: E402, F401

_SENT = re.compile(r"sent (\d+), deferred (\d+), failed (\d+)")


@dataclass
class SendersRun:
    backend: str
    senders: int
    sent: int
    wall: float

    @property
    def rate(self) -> float:
        return self.sent / self.wall


@dataclass
class ClaimFigures:
    count: int
    load_us: float  # laying the list out, per reader
    claim_us: float  # claiming, per reader (batches of 50)
    record_pg_us: float  # recording an outcome (and leaving the outbox), PostgreSQL
    record_sqlite_us: float  # the same record on SQLite


def run_senders(
    project: Path, subscribers: Path, port: int, senders: int, database_url: str, pg: Postgres
) -> SendersRun:
    state = Path(tempfile.mkdtemp(prefix="mailer-bench-senders-"))
    try:
        env = sink_env(state, port, database_url=database_url)
        env["PGPASSWORD"] = pg.password
        argv = [str(MAILER), "send", ISSUE, "--yes", "--rate", "off", "--batch-size", "1000"]
        argv += ["--subscribers", str(subscribers)]
        started = time.monotonic()
        procs = [
            subprocess.Popen(argv, cwd=project, env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(senders)
        ]
        outs = [p.communicate(timeout=600)[0] for p in procs]
        wall = time.monotonic() - started
    finally:
        shutil.rmtree(state, ignore_errors=True)
    sent = 0
    for p, out in zip(procs, outs, strict=True):
        m = _SENT.search(out)
        if p.returncode != 0 or m is None:
            raise RuntimeError(f"mailer send failed ({p.returncode}): {out[-1000:]}")
        sent += int(m.group(1))
    return SendersRun("postgresql" if database_url else "sqlite", senders, sent, wall)


def claim_overhead(pg: Postgres, count: int) -> ClaimFigures:
    from mailer.state.ledger import Ledger
    from mailer.states import DeliveryState

    os.environ["PGPASSWORD"] = pg.password
    emails = [f"reader{i:06d}@example.com" for i in range(count)]
    state = Path(tempfile.mkdtemp(prefix="mailer-bench-claims-"))
    try:
        with Ledger(state, database_url=pg.fresh_database("bench_claims")) as ledger:
            t0 = time.perf_counter()
            ledger.load_outbox(ISSUE, emails)
            t1 = time.perf_counter()
            claiming = recording = 0.0
            claimed = after = 0
            while True:  # as a send does: claim a batch, record each, claim again
                start = time.perf_counter()
                batch = ledger.claim(ISSUE, "bench", 50, 60.0, after=after)
                claiming += time.perf_counter() - start
                if not batch:
                    break
                after = batch[-1][1]
                start = time.perf_counter()
                for email, _ in batch:
                    ledger.record(ISSUE, email, DeliveryState.SENT, "250 2.0.0 Ok: queued")
                recording += time.perf_counter() - start
                claimed += len(batch)
            assert claimed == count, (claimed, count)
        with Ledger(state / "sqlite") as sqlite:
            t4 = time.perf_counter()
            for email in emails:
                sqlite.record(ISSUE, email, DeliveryState.SENT, "250 2.0.0 Ok: queued")
            t5 = time.perf_counter()
    finally:
        shutil.rmtree(state, ignore_errors=True)
    per = 1e6 / count
    return ClaimFigures(count, (t1 - t0) * per, claiming * per, recording * per, (t5 - t4) * per)


def bench(count: int, claims: int) -> tuple[list[SendersRun], ClaimFigures]:
    root = Path(tempfile.mkdtemp(prefix="mailer-bench-h-"))
    try:
        project = make_project(root)
        subscribers = write_subscribers(root / "senders.csv", count)
        with running_postgres() as pg, smtp_sink() as port:
            runs = [run_senders(project, subscribers, port, 1, "", pg)]
            for n in (1, 2, 4):
                url = pg.fresh_database(f"bench_senders_{n}")
                runs.append(run_senders(project, subscribers, port, n, url, pg))
            figures = claim_overhead(pg, claims)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return runs, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4000, help="readers in the list")
    parser.add_argument("--claims", type=int, default=10000, help="readers for the claim bench")
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    runs, figures = bench(args.count, args.claims)
    base = runs[0].rate
    for r in runs:
        print(
            f"{r.backend:10} {r.senders} sender(s): {r.sent} in {r.wall:.2f}s"
            f" = {r.rate:,.0f} msg/s ({r.rate / base:.2f} x one on SQLite)"
        )
    print(
        f"claims, per reader of {figures.count}: lay out {figures.load_us:.1f} us,"
        f" claim {figures.claim_us:.1f} us, record {figures.record_pg_us:.0f} us on PostgreSQL"
        f" (SQLite: {figures.record_sqlite_us:.0f} us)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
