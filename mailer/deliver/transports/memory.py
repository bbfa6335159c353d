"""An in-memory outbox, like django-anymail's test backend: for tests and for embedding."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailer.deliver.message import Message
from mailer.deliver.transports.base import ACCEPTED, Result
from mailer.errors import MailerError


@dataclass
class Outbox:
    """What every memory transport made from it was given, in order; thread-safe.

    `reply(message, n)` decides each outcome (n counts sends over all connections from 1);
    `refuse_open(n)` may return the error that the n-th open raises. `transport` is the
    factory a Sender takes.
    """

    reply: Callable[[Message, int], Result] | None = None
    refuse_open: Callable[[int], MailerError | None] | None = None
    clock: Callable[[], float] = time.monotonic
    messages: list[Message] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # clock() at each send
    opens: int = 0
    closes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def transport(self) -> MemoryTransport:
        return MemoryTransport(self)

    @property
    def recipients(self) -> list[str]:
        with self.lock:
            return [m.recipient for m in self.messages]


class MemoryTransport:
    """One 'connection' to an Outbox."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def open(self) -> None:
        box = self.outbox
        with box.lock:
            box.opens += 1
            n = box.opens
        error = box.refuse_open(n) if box.refuse_open is not None else None
        if error is not None:
            raise error

    def send(self, message: Message) -> Result:
        box = self.outbox
        with box.lock:
            box.messages.append(message)
            box.sent_at.append(box.clock())
            n = len(box.messages)
        return box.reply(message, n) if box.reply is not None else ACCEPTED

    def close(self) -> None:
        with self.outbox.lock:
            self.outbox.closes += 1
