"""(d) Peak memory and time of dry runs against list size; (e) per-message costs in process."""

from __future__ import annotations

import re
import shutil
import smtplib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import ISSUE, MAILER, mailer_env, median, run_process, write_subscribers

_RECIPIENTS = re.compile(r"recipients\s+(\d+)")


@dataclass
class DryRun:
    subscribers: int
    recipients: int
    wall: float
    max_rss_mib: float


def dry_run(project: Path, subscribers: Path, count: int) -> DryRun:
    run = run_process(
        [MAILER, "send", ISSUE, "--dry-run", "--subscribers", subscribers],
        cwd=project,
        env=mailer_env(project / ".mailer-dry"),
    )
    m = _RECIPIENTS.search(run.stdout)
    if run.returncode != 0 or m is None:
        raise RuntimeError(f"dry run failed ({run.returncode}): {run.stderr[-2000:]}")
    return DryRun(count, int(m[1]), run.wall, run.max_rss_kib / 1024)


@dataclass
class PerMessage:
    compose_us: float  # Composer.compose, µs per message (median of the repeats)
    read_us: float  # reading + validating the CSV (SubscriberList), µs per row
    record_us: float  # Ledger.record, µs per call
    token_us: float  # Composer.unsubscribe_url (tokens.sign: itsdangerous's format), µs per call
    quote_us: float | None  # smtplib's dot-stuffing scan of one message, µs (ceiling pays it too)
    stuff_us: float  # mailer's own dot-stuffing (transports.smtp.dot_stuff) of one message, µs
    message_bytes: int
    count: int


def per_message(project: Path, subscribers: Path, count: int, repeats: int = 3) -> PerMessage:
    from mailer import config
    from mailer.compose import load
    from mailer.compose.render import render
    from mailer.deliver.message import Composer
    from mailer.deliver.transports.smtp import dot_stuff
    from mailer.state.ledger import Ledger
    from mailer.state.subscribers import SubscriberList
    from mailer.states import DeliveryState

    settings = config.load(project, environ={"MAILER_SECRET": "bench"})
    issue = load.by_name(settings, ISSUE)
    composer = Composer(render(issue, settings), settings)

    quote = getattr(smtplib, "_quote_periods", None)  # private to smtplib: may go away
    reads: list[float] = []
    composes: list[float] = []
    tokens: list[float] = []
    records: list[float] = []
    quotes: list[float] = []
    stuffs: list[float] = []
    people = list(SubscriberList(subscribers))
    assert len(people) == count, (len(people), count)
    data = composer.compose(people[0]).data  # also a warm-up
    # The passes are interleaved so that a burst of load from elsewhere hits all of them alike.
    for _ in range(repeats):
        start = time.perf_counter()
        people = list(SubscriberList(subscribers))
        reads.append((time.perf_counter() - start) / count)

        start = time.perf_counter()
        for person in people:
            composer.compose(person)
        composes.append((time.perf_counter() - start) / count)

        start = time.perf_counter()
        for person in people:
            composer.unsubscribe_url(person.email)
        tokens.append((time.perf_counter() - start) / count)

        state = Path(tempfile.mkdtemp(prefix="mailer-bench-ledger-"))
        try:
            ledger = Ledger(state)
            start = time.perf_counter()
            for person in people:
                ledger.record(ISSUE, person.email, DeliveryState.SENT, "250 2.0.0 Ok: queued")
            records.append((time.perf_counter() - start) / count)
            ledger.close()
        finally:
            shutil.rmtree(state, ignore_errors=True)

        if quote is not None:
            start = time.perf_counter()
            for _ in range(200):
                quote(data)
            quotes.append((time.perf_counter() - start) / 200)
        start = time.perf_counter()
        for _ in range(200):
            dot_stuff(data)
        stuffs.append((time.perf_counter() - start) / 200)
    return PerMessage(
        compose_us=median(composes) * 1e6,
        read_us=median(reads) * 1e6,
        record_us=median(records) * 1e6,
        token_us=median(tokens) * 1e6,
        quote_us=median(quotes) * 1e6 if quotes else None,
        stuff_us=median(stuffs) * 1e6,
        message_bytes=len(data),
        count=count,
    )


def subscriber_files(folder: Path, counts: list[int]) -> dict[int, Path]:
    return {n: write_subscribers(folder / f"subscribers-{n}.csv", n) for n in counts}
