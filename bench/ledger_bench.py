"""(f) Ledger.record, the send loop's one write per message: µs per call, in process.

    .venv/bin/python bench/ledger_bench.py [--count 20000] [--repeats 3]

Also section (f) of bench/run.py. Timing belongs here, not in the tests (they assert no time).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import ISSUE, median

REPLY = "250 2.0.0 Ok: queued"


@dataclass
class RecordFigures:
    new_us: float  # record() of an address not yet in the ledger, µs per call (median)
    again_us: float  # record() of an address already there (a retry's upsert), µs per call
    count: int
    repeats: int


def bench_record(count: int = 20_000, repeats: int = 3) -> RecordFigures:
    """Time `count` record() calls into a fresh ledger, then `count` more on the same rows."""
    from mailer.state.ledger import Ledger

    emails = [f"reader{i:06d}@example.com" for i in range(count)]
    new: list[float] = []
    again: list[float] = []
    for _ in range(repeats):
        state = Path(tempfile.mkdtemp(prefix="mailer-bench-ledger-"))
        try:
            with Ledger(state) as ledger:
                start = time.perf_counter()
                for email in emails:
                    ledger.record(ISSUE, email, "deferred", "451 4.7.1 Try again later")
                new.append((time.perf_counter() - start) / count)

                start = time.perf_counter()
                for email in emails:
                    ledger.record(ISSUE, email, "sent", REPLY)
                again.append((time.perf_counter() - start) / count)
                sent = ledger.counts(ISSUE)["sent"]
            if sent != count:
                raise RuntimeError(f"the ledger holds {sent} sent rows, not {count}")
        finally:
            shutil.rmtree(state, ignore_errors=True)
    return RecordFigures(median(new) * 1e6, median(again) * 1e6, count, repeats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="calls per pass [20000]")
    parser.add_argument("--repeats", type=int, default=3, help="passes [3]")
    args = parser.parse_args()
    f = bench_record(args.count, args.repeats)
    print(
        f"Ledger.record: {f.new_us:.1f} µs/call new, {f.again_us:.1f} µs/call again"
        f" over {f.count:,} calls (median of {f.repeats})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
