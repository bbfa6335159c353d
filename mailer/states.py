"""Every state mailer stores or reports, in one place. StrEnums: they are their stored text."""

from __future__ import annotations

from enum import StrEnum


class DeliveryState(StrEnum):
    """What became of one reader's copy of one issue (the ledger's `deliveries.state`)."""

    SENT = "sent"  # the server accepted it: never sent again
    DEFERRED = "deferred"  # a 4xx: tried again later
    FAILED = "failed"  # a 5xx: not tried again unless asked (--retry-failed)


class Reason(StrEnum):
    """Why an address is suppressed (the ledger's `suppressions.reason`)."""

    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    MANUAL = "manual"


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

    ALREADY_DONE = "already done"  # sent (or failed for good) in an earlier run
    SUPPRESSED = "suppressed"
    NOT_DUE = "not due"  # deferred earlier; its retry time has not come
