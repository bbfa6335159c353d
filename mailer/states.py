"""Every state mailer stores or reports, in one place. StrEnums: they are their stored text."""

from __future__ import annotations

from enum import StrEnum


class DeliveryState(StrEnum):
    """What became of one reader's copy of one issue (the ledger's `deliveries.state`)."""

    SENT = "sent"  # the server accepted it: never sent again
    DEFERRED = "deferred"  # a 4xx: tried again later
    FAILED = "failed"  # a 5xx: not tried again unless asked (--retry-failed)
    # Accepted (it was `sent`), then returned undeliverable by a DSN: news about that copy,
    # not a new attempt. Only Ledger.record_feedback moves a row here, from `sent` and
    # nothing else, and in the same transaction suppresses the reader as `bounced`, so no
    # send is ever owed this copy again; `record()` never overwrites a bounced row (the rule
    # "a sent row is never downgraded" is about resending, and still holds).
    BOUNCED = "bounced"


class Reason(StrEnum):
    """Why an address is suppressed (the ledger's `suppressions.reason`)."""

    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"  # a hard bounce, or soft_bounce_limit soft ones in a row
    MANUAL = "manual"
    COMPLAINED = "complained"  # the reader reported an issue as spam (an ARF report)


class SubscriberStatus(StrEnum):
    """Where a reader of the store's list stands (the ledger's `subscribers.status`).

    Only `confirmed` readers are sent an issue. The last three are final for imports and
    commands: such a reader is on the suppression list too, which stays the one authority on
    who must never get mail; only a new confirmed signup brings them back.
    """

    PENDING = "pending"  # signed up, the confirmation link not yet followed
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"  # the reader left, or was removed (`subscribers remove`)
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class Feedback(StrEnum):
    """What one message that came back about our mail said (the ledger's `feedback.kind`).

    A message (a DSN, an ARF report, a mail to the unsubscribe address) is of one kind: the
    most severe of its recipients', HARD before SOFT.
    """

    HARD = "hard"  # a permanent failure of that address: suppressed at once
    SOFT = "soft"  # a temporary one: soft_bounce_limit on consecutive issues suppress
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"  # a mail to the List-Unsubscribe mailto: address


class ScheduleState(StrEnum):
    """How far a schedule got (the ledger's `schedules.state`)."""

    SCHEDULED = "scheduled"
    SENDING = "sending"  # a copy went out; finishing it is never stale
    SENT = "sent"  # nobody is left
    CANCELLED = "cancelled"


class ScheduleStatus(StrEnum):
    """What cron should do about a schedule at a given moment (computed, never stored)."""

    FUTURE = "future"
    DUE = "due"
    STALE = "stale"  # due longer ago than max_late: not sent without --force
    SENDING = "sending"
    SENT = "sent"
    CANCELLED = "cancelled"


class Skip(StrEnum):
    """Why a row of the list gets no copy in this run."""

    ALREADY_DONE = "already done"  # sent in an earlier run
    FAILED_EARLIER = "failed earlier"  # failed for good in an earlier run (no --retry-failed)
    SUPPRESSED = "suppressed"
    NOT_DUE = "not due"  # deferred earlier; its retry time has not come
