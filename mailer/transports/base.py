"""What every transport speaks: open / send / close, and the Result of one message."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..message import Message
from ..states import DeliveryState

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
