"""Cron's use case: `mailer send --due` sends every scheduled issue whose time has come."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailer import schedule
from mailer.campaign import Plan, dry_run, ledger, plan, roster, send
from mailer.config import Settings
from mailer.deliver.options import SendOptions
from mailer.deliver.summary import Progress, Summary
from mailer.errors import EXIT_FAILED, EXIT_OK, EXIT_TEMPFAIL, LockedError


@dataclass(frozen=True)
class DueEvent:
    """One thing cron's run did or refused: `kind` is "problem", "stale", "locked" or "sent"."""

    kind: str
    issue: str = ""
    text: str = ""
    entry: schedule.Entry | None = None
    plan: Plan | None = None
    summary: Summary | None = None
    samples: tuple[Path, ...] = ()  # a dry run's sample messages


def send_due(
    settings: Settings,
    options: SendOptions,
    now: datetime,
    *,
    force: bool,
    dry: bool,
    subscribers: Path | None,
    on_progress: Callable[[Progress], None] | None = None,
    ledger_was_reset: bool = False,
) -> Iterator[DueEvent]:
    """Send every scheduled issue whose time has come, one event per thing worth saying."""
    with ledger(settings) as book:
        entries, problems = schedule.entries(settings, book)
    for problem in problems:
        yield DueEvent("problem", text=problem)
    to_send, stale = schedule.due(entries, now, settings.max_late, force=force)
    for entry in stale:
        yield DueEvent("stale", entry.issue, entry=entry)
    for entry in sorted(to_send, key=lambda e: e.send_at):
        if entry.issue == settings.welcome_slug:
            yield DueEvent("problem", entry.issue, text=f"{entry.issue} is the welcome issue")
            continue
        listed = roster(settings, subscribers, dry_run=dry)
        planned = plan(settings, entry.issue, listed, options, dry_run=dry)
        samples: tuple[Path, ...] = ()
        try:
            if dry:
                rehearsal = dry_run(settings, planned)
                summary, samples = rehearsal.summary, rehearsal.samples
            else:
                summary = send(
                    settings, planned, on_progress=on_progress, ledger_was_reset=ledger_was_reset
                )
        except LockedError:
            yield DueEvent("locked", entry.issue, entry=entry)
            continue
        if not dry:
            finished = not (summary.deferred or summary.not_due or summary.interrupted)
            with ledger(settings) as book:
                schedule.record_run(
                    book,
                    entry,
                    finished=finished and not summary.error,
                    started=bool(
                        summary.attempted or summary.already_done or summary.failed_earlier
                    ),
                )
        yield DueEvent(
            "sent", entry.issue, entry=entry, plan=planned, summary=summary, samples=samples
        )
        if summary.interrupted:
            return


def due_exit_code(events: list[DueEvent]) -> int:
    """0 when every due issue went out (or waits for its retries), 1 when something failed
    for good or was refused as too late, 75 when interrupted; a failed send's own code wins."""
    code = EXIT_OK
    for event in events:
        if event.kind in ("problem", "stale"):
            code = max(code, EXIT_FAILED)
        elif event.summary is not None:
            if event.summary.interrupted:
                return EXIT_TEMPFAIL
            if event.summary.failed or event.summary.given_up or event.summary.error:
                code = max(code, event.summary.exit_code)
    return code
