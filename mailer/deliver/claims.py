"""Several `mailer send` processes, on any machines, sharing one list through PostgreSQL.

Each sender reads the list as usual and adds the readers it finds owed to the issue's
outbox (mailer/state/outbox.py: load_outbox; whoever comes first lays the list out, the others
add nothing new). Then each claims batches of readers with FOR UPDATE SKIP LOCKED, so two
senders never hold the same reader, under a lease of `claim_timeout` that a heartbeat
renews every 2 s. Recording an outcome takes the reader out of the outbox in the same
statement. A sender killed mid-send stops renewing: its leases run out and the others take
its readers. At most the copies it had in flight can arrive twice.

The rate limit stays global by division: each sender paces itself at rate / live senders,
counted at every heartbeat. A shared token bucket would cost a round trip to the database
per message; division costs one query per heartbeat and adapts within one when a sender
joins or dies (over or under the rate for those 2 s, never for long).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from mailer.deliver.workqueue import LATER, Later
from mailer.state.subscribers import Subscriber

BATCH = 50  # readers claimed per round trip
HEARTBEAT = 2.0  # seconds between heartbeats (at most a third of the lease): how soon the
# others see a sender join or die, for the shared rate and `mailer status`


class Outbox(Protocol):
    """The shared ledger as a sender uses it: state/senders.py's rows, state/outbox.py's."""

    def join(self, sender: str, issue: str, host: str, pid: int) -> None: ...
    def heartbeat(
        self, issue: str, sender: str, lease: float, counts: tuple[int, int, int]
    ) -> int: ...
    def leave(self, issue: str, sender: str, state: str, counts: tuple[int, int, int]) -> None: ...
    def load_outbox(
        self, issue: str, emails: Sequence[str], attempts: Sequence[int] | None = None
    ) -> int: ...
    def outbox_left(self, issue: str) -> int: ...
    def claim(
        self,
        issue: str,
        sender: str,
        count: int,
        lease: float,
        exclude: Sequence[str] = (),
        after: int = 0,
    ) -> list[tuple[str, int]]: ...
    def unclaim(self, issue: str, sender: str, emails: Sequence[str]) -> None: ...
    def held_elsewhere(self, issue: str, sender: str) -> int: ...


class Claims:
    """This run's share of an issue's outbox on a shared ledger."""

    def __init__(
        self,
        ledger: Outbox,
        issue: str,
        *,
        lease: float,
        batch: int = BATCH,
    ) -> None:
        self.ledger = ledger
        self.issue = issue
        self.lease = lease
        self.batch = batch
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.interval = min(HEARTBEAT, lease / 3)
        self.live = 1  # senders of this issue heard from within one lease, this one included
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._counts: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0)
        self._on_share: Callable[[int], None] = lambda live: None

    def join(
        self,
        counts: Callable[[], tuple[int, int, int]],
        on_share: Callable[[int], None],
    ) -> None:
        """Register, and renew the leases and counts every `interval` s until `leave`."""
        self._counts, self._on_share = counts, on_share
        self.ledger.join(self.id, self.issue, self.host, self.pid)
        self._heartbeat()
        self._beat = threading.Thread(target=self._beating, daemon=True, name="heartbeat")
        self._beat.start()

    def _heartbeat(self) -> None:
        live = self.ledger.heartbeat(self.issue, self.id, self.lease, self._counts())
        if live != self.live:
            self.live = live
            self._on_share(live)

    def _beating(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._heartbeat()
            except Exception:  # noqa: BLE001 - a missed beat is retried; the send goes on
                continue

    def leave(self, *, finished: bool) -> None:
        """Stop the heartbeat; readers claimed but never sent go back to the pool now."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        state = "done" if finished else "stopped"
        self.ledger.leave(self.issue, self.id, state, self._counts())

    def untried(self) -> int:
        """Readers of the shared list never tried by anyone (this sender's claims included)."""
        return self.ledger.outbox_left(self.issue)

    def stream(
        self,
        owed: Iterable[tuple[Subscriber, int]],
        tries: Callable[[str], int] = lambda email: 0,
    ) -> Iterator[tuple[Subscriber, int] | Later]:
        """The readers this sender gets, out of the ones its own list says are owed; LATER
        while only other senders hold readers (they may give some back), never a sleep:
        the send loop reads its own replies meanwhile (a copy in flight here may be the
        very one another sender waits on). `tries`: each reader's attempts as this run
        read them (audience.Audience.attempts), so that none tried since is taken again."""
        mine = {subscriber.email.lower(): subscriber for subscriber, _ in owed}
        self.ledger.load_outbox(self.issue, list(mine), [tries(email) for email in mine])
        unknown: list[str] = []  # claimed but not on this sender's list: left to the others
        after = 0  # where this sender's last claim ended, in list order
        while not self._stop.is_set():
            self._heartbeat()  # a sender that just joined slows the others down at once
            rows = self.ledger.claim(self.issue, self.id, self.batch, self.lease, unknown, after)
            if not rows and after:  # behind us: leases run out, readers given back
                rows = self.ledger.claim(self.issue, self.id, self.batch, self.lease, unknown)
            if rows:
                after = max(after, rows[-1][1])
            emails = [email for email, _ in rows]
            strangers = [email for email in emails if email not in mine]
            if strangers:
                unknown += strangers
                self.ledger.unclaim(self.issue, self.id, strangers)
            for email in emails:
                if email in mine:
                    yield mine[email], 0
            if emails:
                continue
            if not self.ledger.held_elsewhere(self.issue, self.id):
                return  # nothing left that another live sender might still give back
            yield LATER
