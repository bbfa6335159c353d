"""The dry run: accepts everything, talks to no one, keeps the first few messages as files."""

from __future__ import annotations

import re
from pathlib import Path

from mailer.deliver.message import Message
from mailer.deliver.transports.base import Result
from mailer.states import DeliveryState

WOULD_SEND = Result(DeliveryState.SENT, 250, "250 dry run")


class DryRunTransport:
    """Writes the first `keep` messages to out_dir as NN-address.eml (or to `name` if given)."""

    def __init__(self, out_dir: Path | None = None, keep: int = 3, name: str | None = None) -> None:
        self.out_dir = out_dir
        self.keep = keep
        self.name = name
        self.written: list[Path] = []

    def open(self) -> None:
        pass

    def send(self, message: Message) -> Result:
        if self.out_dir is not None and len(self.written) < self.keep:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            safe = re.sub(r"[^\w.@+-]", "_", message.recipient)  # `/` is valid in an address
            path = self.out_dir / (self.name or f"{len(self.written) + 1:02d}-{safe}.eml")
            path.write_bytes(message.data)
            self.written.append(path)
        return WOULD_SEND

    def close(self) -> None:
        pass
