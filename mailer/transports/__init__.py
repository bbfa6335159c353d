"""Where messages go. Each transport is one module speaking open / send / close (base.py):
SMTP, an in-memory outbox, and the dry run; an ESP's API can follow as one more module."""

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
    "pipeline",
]
