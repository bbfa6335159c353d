"""Where messages go. Each transport is one module speaking open / send / close (base.py):
SMTP, an in-memory outbox, and the dry run; an ESP's API can follow as one more module."""

from collections.abc import Callable

from ..config import Settings
from .base import THROTTLE_CODES, Done, Pipeline, Result, Transport, TransportFactory, pipeline
from .dryrun import DryRunTransport
from .memory import MemoryTransport, Outbox

__all__ = [
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
]


def factory(settings: Settings, envelope_from: str) -> Callable[[], Transport]:
    """New connections to the server `transport` names, for a real send."""
    from .smtp import SMTPTransport  # only a real send needs smtplib and ssl

    return lambda: SMTPTransport(settings, envelope_from)
