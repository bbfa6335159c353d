"""Where messages go. Each transport is one module speaking open / send / close (base.py):
SMTP, Amazon SES's API (ses.py), an in-memory outbox, and the dry run; another ESP's API
(Postmark, Mailgun) can follow as one more module and one more branch in `factory`."""

import threading
from collections.abc import Callable
from typing import Any

from mailer.config import Settings
from mailer.deliver.transports.base import (
    ACCEPTED,
    THROTTLE_CODES,
    Done,
    Pipeline,
    Result,
    Transport,
    TransportFactory,
    pipeline,
)
from mailer.deliver.transports.dryrun import DryRunTransport
from mailer.deliver.transports.memory import MemoryTransport, Outbox

__all__ = [
    "ACCEPTED",
    "THROTTLE_CODES",
    "Done",
    "DryRunTransport",
    "MemoryTransport",
    "Outbox",
    "Pipeline",
    "Result",
    "Transport",
    "TransportFactory",
    "factory",
    "pipeline",
    "rate_ceiling",
]


def factory(settings: Settings, envelope_from: str) -> Callable[[], Transport]:
    """New connections to the server `transport` names, for a real send."""
    if settings.transport == "ses":
        return _ses_factory(settings, envelope_from)
    from mailer.deliver.transports.smtp import SMTPTransport  # only a real send needs smtplib

    return lambda: SMTPTransport(settings, envelope_from)


def _ses_factory(settings: Settings, envelope_from: str) -> Callable[[], Transport]:
    """SES transports sharing one boto3 client (thread-safe), made at the first call."""
    from mailer.deliver.transports.ses import SESTransport, client  # only ses needs boto3

    shared: list[Any] = []
    lock = threading.Lock()

    def make() -> Transport:
        with lock:
            if not shared:
                shared.append(client(settings))
        return SESTransport(settings, envelope_from, shared[0])

    return make


def rate_ceiling(settings: Settings) -> float | None:
    """The most messages per second the service takes, or None when it sets no limit.

    smtp: None. ses: the account's MaxSendRate (raises a MailerError when it cannot be
    read, or when the account's sending is paused: nothing could go out).
    """
    if settings.transport != "ses":
        return None
    from mailer.deliver.transports.ses import max_send_rate

    return max_send_rate(settings)
