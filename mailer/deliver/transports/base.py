"""What every transport speaks: open / send / close, and the Result of one message.

A Pipeline is the same with replies that come later: `submit` hands over a message and a
`Done` to call with its outcome, which may be called during a later submit or `flush`
(RFC 2920 pipelining keeps a window of transactions in flight). `pipeline()` turns any
Transport into one of depth 1, so the send loop speaks only Pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mailer.deliver.message import Message
from mailer.states import DeliveryState

THROTTLE_CODES = frozenset({421, 450, 451, 454})


@dataclass(frozen=True)
class Result:
    """What became of one message: its state, the server's code and words."""

    state: DeliveryState
    code: int
    reply: str
    dropped: bool = False  # the connection is gone; open a new one before the next message
    uncertain: bool = False  # lost after the whole message was sent: it may have arrived

    @property
    def throttled(self) -> bool:
        return self.state == DeliveryState.DEFERRED and self.code in THROTTLE_CODES


ACCEPTED = Result(DeliveryState.SENT, 250, "250 accepted")


class Transport(Protocol):
    """One connection's worth of sending.

    `open` raises a MailerError when no message can go out (server unreachable, login
    refused); `send` raises one when the server refuses us rather than this reader, and
    otherwise returns the reader's Result. `close` never raises.
    """

    def open(self) -> None: ...
    def send(self, message: Message) -> Result: ...
    def close(self) -> None: ...


TransportFactory = Callable[[], Transport]


Done = Callable[[Result | None], None]
"""Told one message's outcome, once. None: the message never reached the server (it went
out behind one whose reply was lost): give the reader back, untried and unrecorded."""


@runtime_checkable
class Pipeline(Protocol):
    """A connection with messages in flight. `submit` and `flush` return False when the
    connection is gone (every message owed has been told its outcome); `submit` raises a
    MailerError, as `send` does, when the server refuses us rather than a reader."""

    def open(self) -> None: ...
    def submit(self, message: Message, done: Done) -> bool: ...
    def flush(self) -> bool: ...  # send what waits and read every reply owed
    def close(self) -> None: ...  # after flush; never raises


class Serial:
    """A Transport as a Pipeline of depth 1: each message's outcome before the next."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def open(self) -> None:
        self.transport.open()

    def submit(self, message: Message, done: Done) -> bool:
        return send_now(self.transport, message, done)

    def flush(self) -> bool:
        return True

    def close(self) -> None:
        self.transport.close()


def send_now(transport: Transport, message: Message, done: Done) -> bool:
    """Pipeline.submit for a transport that waits for each reply: `done` is told at once;
    False when the connection went with it."""
    result = transport.send(message)
    done(result)
    return not result.dropped


def pipeline(transport: Transport | Pipeline) -> Pipeline:
    """The transport itself when it pipelines, else the same one message at a time."""
    return transport if isinstance(transport, Pipeline) else Serial(transport)
