"""One issue to one list: plan it, send it (for real, as a dry run, or one test copy), and
what is left to do. The CLI calls these and prints what they return (cron's: cron.py).

    plan()       render once, check, and count who is owed a copy: a frozen Plan
    send()       the real send under the issue's lock, recorded in the ledger
    dry_run()    the same loop through the dry-run transport, recording nothing
    test_copy()  one copy to one address through the same loop, recording nothing
    pick_issue() the newest issue someone on the list is still owed
    status()     sent / deferred / failed / pending for one issue
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mailer.compose import load as load_mod
from mailer.compose.issue import slug_of
from mailer.compose.render import Email, render
from mailer.config import STORE, Settings
from mailer.deliver import dkim as dkim_mod
from mailer.deliver.audience import Audience, History, LedgerWatch
from mailer.deliver.claims import Claims
from mailer.deliver.journal import Journal, JournaledLedger
from mailer.deliver.message import Composer
from mailer.deliver.options import SendOptions, estimate
from mailer.deliver.preflight import check_issue_fields, check_preflight, check_secret
from mailer.deliver.sender import NullRecorder, Sender
from mailer.deliver.summary import Progress, Summary
from mailer.deliver.transports import DryRunTransport, Transport, rate_ceiling
from mailer.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TEMPFAIL,
    InputError,
    LockedError,
    MailerError,
)
from mailer.state import continuity
from mailer.state.deliveries import Delivery
from mailer.state.ledger import existing_ledger, lock, open_ledger
from mailer.state.roster import Listing, Roster, roster_for, segment
from mailer.state.senders import SenderRow
from mailer.state.subscribers import Problem, Subscriber, check_email
from mailer.states import DeliveryState, Skip
from mailer.when import now as current_time
from mailer.when import spoken

SAMPLES = 3  # .eml files a dry run keeps
SHOWN_PROBLEMS = 20  # list problems a plan carries for display; the counts are exact


def load(settings: Settings, name: str) -> Email:
    """Read, repair, parse and render an issue by name (issues/NAME.md) or path."""
    return render(load_mod.by_name(settings, name), settings)


ledger = open_ledger  # the project's ledger, created on first use
roster = roster_for  # --subscribers, else `subscribers`: a CSV file or the store


# -- planning -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A send worked out before anything goes out: who is owed a copy, batches, duration."""

    email: Email
    composer: Composer
    subscribers: Roster  # the list, narrowed to the issue's segment if it has one
    options: SendOptions
    rows: int  # data rows in the file
    owed: int  # valid subscribers owed a copy now
    already_done: int  # sent in an earlier run
    suppressed: int
    not_due: int
    invalid: int
    skipped: int  # unsubscribed or duplicate rows in the list itself
    problems: tuple[Problem, ...]  # the first invalid rows
    skipped_rows: tuple[Problem, ...]  # the first skipped rows
    ceiling: float | None = None  # the service's own limit (SES MaxSendRate), if it has one
    failed_earlier: int = 0  # failed for good in an earlier run

    @property
    def issue(self) -> str:
        return self.email.issue.slug

    @property
    def batches(self) -> int:
        return -(-self.owed // self.options.batch_size) if self.owed else 0

    @property
    def estimate(self) -> float:
        """Seconds the real send would take at the chosen rate, batches and pauses."""
        return estimate(self.owed, self.options)


def plan(
    settings: Settings,
    issue: str,
    subscribers: Path | Roster,
    options: SendOptions,
    *,
    dry_run: bool,
    tags: tuple[str, ...] | None = None,
) -> Plan:
    """Render `issue` once, refuse what must not be sent, and count who is owed a copy.

    The readers are those with any of `tags` (`--tag`), else of the front matter's
    `segment:`, else everyone on the list.
    """
    if not dry_run:
        check_secret(settings)
    signer = dkim_mod.load(settings)  # a bad DKIM key stops here, before anything is rendered
    email = load(settings, issue)
    check_preflight(email, settings, dry_run=dry_run)
    # An ESP says how fast it takes mail (SES: the account's MaxSendRate): never faster.
    ceiling = None if dry_run else rate_ceiling(settings)
    if ceiling is not None and options.rate > ceiling:
        options = dataclasses.replace(options, rate=ceiling)
    composer = Composer(email, settings, signer=signer)
    if isinstance(subscribers, Path):
        subscribers = Roster(subscribers)
    if tags is None:
        tags = segment(email.issue.meta.get("segment"), email.issue.path)
    subscribers = subscribers.with_tags(tags)
    listing = subscribers.open(settings)
    composer.check_fields(set(listing.columns), subscribers.label)
    with _history(settings) as ledger:
        audience = _audience(ledger, email.issue.slug, options, settings)
    skips = dict.fromkeys(Skip, 0)
    owed = 0
    for subscriber in listing:
        skip = audience.skip(subscriber)
        if skip is None:
            owed += 1
        else:
            skips[skip] += 1
    return Plan(
        email,
        composer,
        subscribers,
        options,
        rows=listing.rows_in_file,
        owed=owed,
        already_done=skips[Skip.ALREADY_DONE],
        suppressed=skips[Skip.SUPPRESSED],
        not_due=skips[Skip.NOT_DUE],
        invalid=listing.problem_count,
        skipped=listing.skipped_count,
        problems=tuple(listing.problems[:SHOWN_PROBLEMS]),
        skipped_rows=tuple(listing.skipped[:SHOWN_PROBLEMS]),
        ceiling=ceiling,
        failed_earlier=skips[Skip.FAILED_EARLIER],
    )


# A real send opens the whole Ledger instead: it hands its parts to the audience, the watch,
# the journal and the claims.
class Past(History, Protocol):
    """The ledger as plans, dry runs, pick_issue and `status` read it."""

    @property
    def shared(self) -> bool: ...
    def counts(self, issue: str) -> dict[DeliveryState, int]: ...
    def senders(self, issue: str, lease: float) -> list[SenderRow]: ...


class _history:
    """`with _history(settings) as ledger`: the ledger if one exists (None if not), closed after."""

    def __init__(self, settings: Settings) -> None:
        self.ledger = existing_ledger(settings)

    def __enter__(self) -> Past | None:
        return self.ledger

    def __exit__(self, *exc_info: object) -> None:
        if self.ledger is not None:
            self.ledger.close()


def _audience(
    ledger: History | None, slug: str, options: SendOptions, settings: Settings
) -> Audience:
    return Audience.of(
        ledger,
        slug,
        retry_failed=options.retry_failed,
        retry_delay=options.retry_delay,
        max_attempts=options.max_attempts,
        secret=settings.signing_secret,
    )


# -- sending ------------------------------------------------------------------------------


def _finish(summary: Summary, listing: Listing, *, dry_run: bool = False) -> Summary:
    return dataclasses.replace(
        summary,
        dry_run=dry_run,
        invalid=listing.problem_count,
        skipped=listing.skipped_count,
    )


def smtp(settings: Settings, composer: Composer) -> Callable[[], Transport]:
    """The transport factory for a real send (`transport`): one connection per call.

    Each Message carries its own envelope sender (VERP); composer.envelope_from (the bounce
    address, else From) is what a bare Message gets.
    """
    from mailer.deliver.transports import factory

    return factory(settings, composer.envelope_from)


def send(
    settings: Settings,
    planned: Plan,
    *,
    on_start: Callable[[], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    ledger_was_reset: bool = False,
) -> Summary:
    """Send for real, holding the issue's lock; the ledger is re-read once the lock is held.

    Under the lock, first: outcomes an earlier run could only journal are recorded, readers
    deferred for longer than give_up_after become failed, and the ledger is checked against
    what earlier runs of the issue left outside it (state/continuity.py).
    """
    slug = planned.issue
    book = ledger(settings)
    # A shared ledger (PostgreSQL) lets several senders split the list: no lock, claims.
    lease = settings.claim_timeout.total_seconds()
    claims = Claims(book, slug, lease=lease) if book.shared else None
    exclusive = lock(settings.state_path, f"send-{slug}") if claims is None else nullcontext()
    try:
        with exclusive:
            journal = Journal(settings.state_path, claims.id if claims else "")
            reconciled = journal.replay_all(book)
            cutoff = current_time() - settings.give_up_after
            given_up = book.give_up(slug, cutoff, spoken(settings.give_up_after))
            marker = continuity.start(
                settings.state_path,
                slug,
                book.ledger_id(),
                book.where,
                book.counts(slug)[DeliveryState.SENT],
                reset=ledger_was_reset,
            )
            listing = planned.subscribers.open(settings)
            audience = _audience(book, slug, planned.options, settings)
            recorder = JournaledLedger(book, journal)
            sender = Sender(
                planned.email,
                planned.composer,
                smtp(settings, planned.composer),
                recorder,
                planned.options,
                audience=audience,
                watch=LedgerWatch(book, audience.suppressed, secret=settings.signing_secret),
                claims=claims,
            )
            journal.reserve()  # room for outcomes even if the disk fills up while sending
            if on_start is not None:
                on_start()
            try:
                summary = sender.run(listing, listing.rows_in_file, on_progress)
            finally:
                if not recorder.journalled:
                    journal.discard()
                damage = book.damage_error()
                if not damage:  # a damaged or vanished ledger keeps the earlier count
                    with contextlib.suppress(MailerError):
                        sent = book.counts(slug)[DeliveryState.SENT]
                        continuity.write_marker(settings.state_path, marker.advanced(sent))
            if damage and not summary.error:
                summary = dataclasses.replace(
                    summary, error=damage.format_message(), error_code=damage.exit_code
                )
    except LockedError as exc:
        raise LockedError(
            f"another mailer run is sending {slug} ({exc.message}); not starting a second one",
            hint="wait for it to finish; re-running afterwards is safe",
        ) from None
    finally:
        book.close()
    finished = _finish(summary, listing)
    return dataclasses.replace(finished, reconciled=reconciled, given_up=given_up)


@dataclass(frozen=True)
class DryRun:
    """What a dry run found: the summary of the loop, and the sample messages it wrote."""

    summary: Summary
    samples: tuple[Path, ...]


def dry_run(settings: Settings, planned: Plan) -> DryRun:
    """The whole send loop through the dry-run transport: nothing sent, nothing recorded."""
    out = settings.root / "build" / planned.issue / "dry-run"
    for old in out.glob("*.eml"):
        old.unlink()
    transport = DryRunTransport(out, keep=SAMPLES)
    listing = planned.subscribers.open(settings)
    with _history(settings) as ledger:
        audience = _audience(ledger, planned.issue, planned.options, settings)
    sender = Sender(
        planned.email,
        planned.composer,
        lambda: transport,
        NullRecorder(),
        planned.options.unpaced(),
        audience=audience,
    )
    summary = sender.run(listing, listing.rows_in_file)
    return DryRun(_finish(summary, listing, dry_run=True), tuple(transport.written))


@dataclass(frozen=True)
class TestCopy:
    """One copy to one address: what the server said, or where the dry run wrote it."""

    issue: str
    address: str
    state: DeliveryState
    reply: str
    path: Path | None = None  # the .eml a dry run wrote

    @property
    def exit_code(self) -> int:
        if self.state == DeliveryState.SENT:
            return EXIT_OK
        return EXIT_FAILED if self.state == DeliveryState.FAILED else EXIT_TEMPFAIL


def test_copy(settings: Settings, issue: str, to: str, *, dry_run: bool) -> TestCopy:
    """Send (or with dry_run, write) one copy to `to`: the same loop, no ledger entry.

    Raises ValueError when `to` is not an address.
    """
    if not dry_run:
        check_secret(settings)
    address = check_email(to)
    signer = dkim_mod.load(settings)
    email = load(settings, issue)
    check_preflight(email, settings, dry_run=dry_run)
    check_issue_fields(email, settings)
    composer = Composer(email, settings, signer=signer)
    slug = email.issue.slug
    out = settings.root / "build" / slug
    dry = DryRunTransport(out, keep=1, name="test-copy.eml")
    transports = (lambda: dry) if dry_run else smtp(settings, composer)
    recorder = NullRecorder()
    options = dataclasses.replace(SendOptions(), max_attempts=1).unpaced()
    reader = Subscriber(address, "", {}, 0)
    Sender(email, composer, transports, recorder, options).run([reader], 1)
    state, reply = recorder.replies.get(address, (DeliveryState.DEFERRED, "no reply"))
    return TestCopy(slug, address, state, reply, dry.written[0] if dry.written else None)


# -- what is left -------------------------------------------------------------------------


def pick_issue(settings: Settings, subscribers: Roster) -> str:
    """The newest issue (by file time) that some active subscriber has not been sent yet."""
    paths = sorted(load_mod.files(settings.root), key=lambda p: p.stat().st_mtime, reverse=True)
    paths = [p for p in paths if slug_of(p) != settings.welcome_slug]  # sent on confirming
    if not paths:
        raise InputError(
            f"no issues in {load_mod.folder(settings.root)}", hint="create issues/NAME.md"
        )
    with _history(settings) as ledger:
        if ledger is None:
            return slug_of(paths[0])
        for path in paths:
            audience = Audience.of(ledger, slug_of(path), secret=settings.signing_secret)
            # A deferred reader is still owed; one failed for good is not.
            gone = (Skip.SUPPRESSED, Skip.ALREADY_DONE, Skip.FAILED_EARLIER)
            if any(audience.skip(s) not in gone for s in subscribers.open(settings)):
                return slug_of(path)
    raise InputError("every issue in issues/ has been sent to everyone on the list")


@dataclass(frozen=True)
class Status:
    """Where one issue's send stands."""

    issue: str
    counts: dict[DeliveryState, int]
    pending: int | None  # None: no subscriber list to count against
    problems: tuple[Delivery, ...]  # failed and deferred rows, oldest first
    senders: tuple[SenderRow, ...] = ()  # a shared ledger: who sent it, newest first


def status(
    settings: Settings, name: str, subscribers: Path | None, tags: tuple[str, ...] | None = None
) -> Status:
    """Counts from the ledger; pending: on the list and owed a copy never tried (the audience),
    of the same readers a send reaches: `tags`, else the issue's `segment:`, else everyone."""
    slug = slug_of(Path(name))
    with _history(settings) as ledger:
        if ledger is None:
            load_mod.resolve(name, settings.root)
            raise InputError(f"nothing has been sent yet (no ledger in {settings.state_path})")
        deliveries = list(ledger.deliveries(slug))
        counts = ledger.counts(slug)
        suppressed = ledger.suppressed_set()
        lease = settings.claim_timeout.total_seconds()
        senders = tuple(ledger.senders(slug, lease)) if ledger.shared else ()
    if not deliveries:
        load_mod.resolve(name, settings.root)  # no such issue: say so, not "pending 20"
    store = subscribers is None and settings.subscribers == STORE
    listed = Roster(None if store else subscribers or settings.root / settings.subscribers)
    pending = None
    if listed.path is None or listed.path.exists():
        if tags is None:  # the issue's own segment, if its file is still there
            path = load_mod.file_of(settings.root, slug)
            meta = load_mod.read(settings, path).meta if path.is_file() else {}
            tags = segment(meta.get("segment"), path)
        audience = Audience.of_rows(slug, deliveries, suppressed, secret=settings.signing_secret)
        pending = sum(audience.pending(s) for s in listed.with_tags(tags).open(settings))
    problems = tuple(d for d in deliveries if d.state != DeliveryState.SENT)
    return Status(slug, counts, pending, problems, senders)
