"""Read a mailbox into the ledger (`mailer bounces`): classify, resolve, record, count.

One message is one ledger record (keyed by its Message-ID, else its bytes' hash), so reading
it again changes nothing. What is not understood, or tied to none of our copies (resolve.py),
is counted and left where it is.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mailer.config import Settings
from mailer.feedback.classify import Classified, classify
from mailer.feedback.mailboxes import Mailbox
from mailer.feedback.resolve import Readers, resolve
from mailer.state.ledger import FeedbackOutcome, Ledger, open_ledger, state_lock
from mailer.states import Feedback


@dataclass
class Report:
    """What `mailer bounces` did; lines say who and why, for -v."""

    read: int = 0
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    unsubscribes: int = 0
    already: int = 0
    unknown: int = 0
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"read {self.read}: {self.hard} hard bounces, {self.soft} soft, "
            f"{self.complaints} complaints, {self.unsubscribes} unsubscribes, "
            f"{self.already} already handled, {self.unknown} not understood"
        )

    def count(self, kind: Feedback) -> None:
        if kind is Feedback.HARD:
            self.hard += 1
        elif kind is Feedback.SOFT:
            self.soft += 1
        elif kind is Feedback.COMPLAINT:
            self.complaints += 1
        else:
            self.unsubscribes += 1


def message_key(found: Classified, raw: bytes) -> str:
    """What makes a message the same one when read again: its Message-ID, else its bytes."""
    if re.fullmatch(r"<[^<>\s]{1,240}>", found.message_id):
        return found.message_id
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _line(outcome: FeedbackOutcome, limit: int) -> str:
    e = outcome.event
    what = {
        Feedback.HARD: "hard bounce",
        Feedback.SOFT: "soft bounce",
        Feedback.COMPLAINT: "complaint",
        Feedback.UNSUBSCRIBE: "unsubscribe",
    }[e.kind]
    said = " ".join(filter(None, (e.status, e.detail)))
    if outcome.suppressed:
        result = "suppressed"
    elif e.kind is Feedback.SOFT and outcome.streak < limit:
        result = f"{outcome.streak} of {limit} in a row"
    else:
        result = "was already suppressed"
    return f"{what}  {e.email}  {e.issue or '-'}  {said or '-'}  ({result})"


def process(
    settings: Settings,
    box: Mailbox,
    *,
    keep: bool = False,
    on_message: Callable[[Report], None] | None = None,
) -> Report:
    """Read every message in `box`, record what each says, move handled ones (unless keep).

    One run at a time per project (the `bounces` lock): two would move the same files.
    """
    report = Report()
    limit = settings.soft_bounce_limit
    with state_lock(settings, "bounces"), open_ledger(settings) as ledger:
        readers = Readers(ledger, settings)
        for item in box.messages():
            report.read += 1
            found = classify(item.data, settings)
            key = message_key(found, item.data)
            handled = handle(
                found, key, item.label, box.name, ledger, settings, report, limit, readers
            )
            if handled and not keep:
                box.done(item)
            if on_message is not None:
                on_message(report)
    return report


def handle(
    found: Classified,
    key: str,
    label: str,
    source: str,
    ledger: Ledger,
    settings: Settings,
    report: Report,
    limit: int,
    readers: Readers | None = None,
) -> bool:
    """Act on one message; True when it is handled (now or before) and may be moved."""
    if ledger.feedback_seen(key):
        report.already += 1
        report.lines.append(f"already handled  {label}  {key}")
        return True
    if found.kind is None:
        report.unknown += 1
        report.lines.append(f"not understood  {label}: {found.why}")
        return False
    resolved = resolve(found, ledger, settings, readers)
    event = resolved.event
    if event is None:  # nobody's: kept where it is
        report.unknown += 1
        report.lines.append(f"not understood  {label}: {resolved.why_not}")
        return False
    kind = event.kind
    outcomes = ledger.record_feedback(key, kind, [event], source=source, soft_limit=limit)
    if outcomes is None:  # another process handled it a moment ago
        report.already += 1
        report.lines.append(f"already handled  {label}  {key}")
        return True
    report.count(kind)
    report.lines += [_line(o, limit) for o in outcomes]
    return True
