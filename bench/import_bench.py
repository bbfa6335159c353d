"""Importing a large list into the store, and a dry run of the store's list against a CSV's.

    python bench/import_bench.py [--count 1000000] [--dry-run-count 100000] [--skip pg]

import: a generated Mailchimp-style CSV of --count readers (every 10th with two tags),
imported in a fresh process per backend (`lists.import_file`, as `mailer subscribers
import` calls it, so resource.getrusage reads that one import's peak RSS): rows per second,
rows per CPU second of the import process (the machine is shared: its load moves wall time
far more than CPU time) and peak RSS, on SQLite and on PostgreSQL (the test suite's
throwaway cluster, tests/postgres.py; needs root and Debian's postgresql). A second import
of the same file, which changes nothing, is timed too.

dry run: `mailer send issue-2 --dry-run` to --dry-run-count readers, read from a CSV and from
the store (SQLite), each in its own process: wall time, and the store's / the CSV's.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ISSUE, MAILER, REPO, mailer_env, make_project, write_subscribers

sys.path.insert(0, str(REPO / "tests"))
from postgres import running_postgres, skip_reason  # noqa: E402

HEADER = [
    "Email Address",
    "First Name",
    "Last Name",
    "Company",
    "MEMBER_RATING",
    "OPTIN_TIME",
    "CONFIRM_TIME",
    "LEID",
    "TAGS",
]


def write_export(path: Path, count: int) -> Path:
    """A Mailchimp-style subscribed members CSV of `count` distinct readers."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for i in range(count):
            tags = '"Editors","Paid"' if i % 10 == 0 else ""
            first = "Zoë" if i % 7 == 0 else "Reader"
            writer.writerow(
                [
                    f"reader{i:07d}@example.com",
                    first,
                    f"Number {i}",
                    "Example Ltd" if i % 3 == 0 else "",
                    str(1 + i % 5),
                    "2023-04-21 11:16:57",
                    "2023-04-21 11:17:30",
                    str(i),
                    tags,
                ]
            )
    return path


def _child(project: str, export: str, env: dict[str, str]) -> None:
    """In a fresh process: one import, then its wall time, rows and peak RSS as JSON."""
    os.environ.update(env)
    from mailer import config, lists

    settings = config.load(Path(project))
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = before.ru_utime + before.ru_stime
    start = time.perf_counter()
    report = lists.import_file(settings, Path(export))
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime - cpu_before,
                      "rows": report.rows, "added": report.added, "unchanged": report.unchanged,
                      "peak_mib": usage.ru_maxrss / 1024}))  # fmt: skip


def run_import(project: Path, export: Path, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(project), str(export), json.dumps(env)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def import_figures(root: Path, count: int, backend: str, url: str, pg_env: dict[str, str]) -> None:
    project = make_project(root / f"import-{backend}")
    export = write_export(root / f"subscribed_members_export_{backend}.csv", count)
    env = mailer_env(root / f"state-{backend}", subscribers="store")
    if url:
        env.update({"MAILER_DATABASE_URL": url, **pg_env})
    for label in ("first import", "same file again"):
        got = run_import(project, export, env)
        rate, cpu_rate = got["rows"] / got["wall"], got["rows"] / got["cpu"]
        print(
            f"| import {count:,} rows, {backend}, {label} | {rate:,.0f} rows/s"
            f" ({got['wall']:.1f} s; {cpu_rate:,.0f} rows per CPU second; added"
            f" {got['added']:,.0f}, unchanged {got['unchanged']:,.0f})"
            f" | peak RSS {got['peak_mib']:.0f} MiB |"
        )


def dry_run_figures(root: Path, count: int) -> None:
    project = make_project(root / "dry")
    listing = write_subscribers(root / "dry-list.csv", count)
    store_env = mailer_env(root / "dry-state", subscribers="store")
    done = subprocess.run(
        [MAILER, "subscribers", "import", listing], cwd=project, env=store_env,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    times = {}
    for label, args, env in (
        ("CSV", ["--subscribers", str(listing)], mailer_env(root / "dry-state-csv")),
        ("store", [], store_env),
    ):
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            ran = subprocess.run(
                [MAILER, "send", ISSUE, "--dry-run", *args],
                cwd=project, env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            runs.append(time.perf_counter() - start)
            assert ran.returncode == 0, ran.stdout + ran.stderr
            assert f"recipients   {count}" in ran.stdout, ran.stdout
        times[label] = sorted(runs)[1]
        print(f"| dry run, {count:,} readers, {label} | {times[label]:.2f} s (median of 3) |")
    print(f"| dry run, store / CSV | {times['store'] / times['CSV']:.2f} |")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="rows to import")
    parser.add_argument("--dry-run-count", type=int, default=100_000, help="readers, dry run")
    parser.add_argument("--skip", default="", help="comma-separated: sqlite, pg, dry")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(f"load average {os.getloadavg()[0]:.2f}")
    root = Path(tempfile.mkdtemp(prefix="mailer-bench-import-"))
    try:
        if "sqlite" not in skip:
            import_figures(root, args.count, "sqlite", "", {})
        if "pg" not in skip:
            reason = skip_reason()
            if reason:
                print(f"PostgreSQL skipped: {reason}")
            else:
                with running_postgres() as pg:
                    url = pg.fresh_database("bench_import")
                    import_figures(root, args.count, "postgresql", url, pg.env())
        if "dry" not in skip:
            dry_run_figures(root, args.dry_run_count)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
