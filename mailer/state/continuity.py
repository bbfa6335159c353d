"""What a real send leaves outside the ledger, so that a new, replaced or older ledger is seen.

The ledger is the one record of who was sent what. If it is deleted, replaced, or restored
from an older backup, a send would find readers "owed" who already have the issue, and mail
them again. So each issue a real send starts leaves a small marker next to the locks,
`state_dir/started/<issue>.json`: which ledger recorded it (an id made once per ledger and
kept inside it, so a backup keeps it too) and how many copies that ledger held as sent. The
next run compares: another ledger id, or fewer copies sent than the marker remembers, and the
send is refused until the author says the ledger was reset on purpose.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mailer.errors import EXIT_USAGE, MailerError, io_error
from mailer.state.store import now_text

FOLDER = "started"
OVERRIDE = "--ledger-was-reset"


class LedgerMismatch(MailerError):
    """The ledger is not the one earlier runs of this issue recorded in (or is older)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Marker:
    """An issue a real send started: in which ledger, and how many copies it held as sent."""

    issue: str
    ledger_id: str
    where: str  # the ledger's file or database (password masked), for the message
    sent: int
    started_at: str  # the first run's start, the ledger's UTC text form
    updated_at: str

    def advanced(self, sent: int) -> Marker:
        """The marker after a run that left `sent` copies recorded as sent."""
        return replace(self, sent=max(self.sent, sent), updated_at=now_text())


def _path(state_dir: Path, issue: str) -> Path:
    return Path(state_dir) / FOLDER / f"{issue}.json"


def read_marker(state_dir: Path, issue: str) -> Marker | None:
    """The issue's marker; None if no real send of it started here (or it is unreadable)."""
    try:
        data = json.loads(_path(state_dir, issue).read_text(encoding="utf-8"))
        return Marker(**{k: data[k] for k in Marker.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged marker protects nothing; the next write replaces it


def write_marker(state_dir: Path, marker: Marker) -> None:
    """Write the marker whole (a temporary file, then renamed over the old one)."""
    path = _path(state_dir, marker.issue)
    partial = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(asdict(marker), indent=1) + "\n", encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise io_error(path, "cannot record that this issue was started", exc) from exc


def start(
    state_dir: Path, issue: str, ledger_id: str, where: str, sent: int, *, reset: bool
) -> Marker:
    """Check the ledger against the issue's marker, then write the marker for this run.

    LedgerMismatch unless the marker (if any) names this ledger and no more copies sent
    than it holds; `reset` (the author's --ledger-was-reset) accepts the ledger as it is.
    """
    marker = read_marker(state_dir, issue)
    if marker is not None and not reset:
        problem = mismatch(marker, ledger_id, where, sent)
        if problem is not None:
            raise LedgerMismatch(
                problem,
                hint=f"if the ledger was reset or restored on purpose, add {OVERRIDE}"
                " (docs/operations.md#backups)",
            )
    now = now_text()
    if marker is None:
        marker = Marker(issue, ledger_id, where, sent, now, now)
    else:  # a reset starts the count again from what this ledger holds
        marker = replace(marker, ledger_id=ledger_id, where=where, sent=sent, updated_at=now)
    write_marker(state_dir, marker)
    return marker


def mismatch(marker: Marker, ledger_id: str, where: str, sent: int) -> str | None:
    """Why this ledger is not the one earlier runs of the issue recorded in; None if it is."""
    copies = f"{marker.sent} cop{'y' if marker.sent == 1 else 'ies'}"
    if marker.ledger_id != ledger_id:
        return (
            f"{marker.issue} was started on {marker.started_at} in another ledger"
            f" ({marker.where}, id {marker.ledger_id[:8]}, {copies} sent); the ledger at"
            f" {where} (id {ledger_id[:8]}) holds {sent}: sending now could mail those"
            " readers again"
        )
    if sent < marker.sent:
        return (
            f"{marker.issue}: earlier runs recorded {copies} as sent (last on"
            f" {marker.updated_at}) but the ledger at {where} holds {sent}: it is an older"
            f" copy, and sending now could mail up to {marker.sent - sent} readers again"
        )
    return None
