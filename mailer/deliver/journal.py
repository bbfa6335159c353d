"""Outcomes the ledger could not take (disk full, read-only, gone), kept beside it.

A send reserves the file before its first message (RESERVE bytes of zeros), so that even a
full disk leaves room to write the few outcomes that matter: each is a line of JSON written
over the zeros and fsynced. The next run replays it into the ledger before choosing who is
owed a copy, so a reader whose copy was accepted is not sent another.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Protocol

from mailer.deliver.summary import Recorder
from mailer.errors import EXIT_TEMPFAIL, MailerError
from mailer.states import DeliveryState

JOURNAL_NAME = "ledger.journal"
RESERVE = 64 * 1024  # room for ~300 outcomes; a run stops at the first one it must journal


class Outcomes(Recorder, Protocol):
    """The ledger as the journal uses it: where outcomes go, and the folder it lives in."""

    @property
    def state_dir(self) -> Path: ...


class RecordFailed(MailerError):
    """An outcome could not be written to the ledger; the run stops."""

    exit_code = EXIT_TEMPFAIL


class Journal:
    """state_dir/ledger.journal: lines of JSON, then zeros up to the reserved size."""

    def __init__(self, state_dir: Path, sender: str = "") -> None:
        # Senders sharing a database (and perhaps this folder) each keep their own.
        name = f"{JOURNAL_NAME}.{sender.replace(':', '-').replace('/', '-')}" if sender else ""
        self.path = Path(state_dir) / (name or JOURNAL_NAME)

    @classmethod
    def at(cls, path: Path) -> Journal:
        """The journal in the file `path` (another sender's, found by replay_all)."""
        journal = cls(path.parent)
        journal.path = path
        return journal

    def reserve(self) -> None:
        """Make sure the file exists with its room allocated (before anything is sent)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # a database ledger makes none
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < RESERVE:
                    os.posix_fallocate(fd, 0, RESERVE)
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise RecordFailed(
                f"{self.path}: cannot reserve room for the journal ({exc.strerror});"
                " nothing was sent",
                hint="free disk space in the state directory, then send again",
            ) from None

    def append(self, issue: str, email: str, state: DeliveryState, reply: str) -> None:
        """Write one outcome for good, inside the reserved room (OSError if impossible)."""
        line = json.dumps({"issue": issue, "email": email, "state": state.value, "reply": reply})
        data = line.encode("utf-8") + b"\n"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            used = self._used(fd)
            os.pwrite(fd, data, used)
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _used(fd: int) -> int:
        """Bytes of journal lines before the zeros."""
        content = os.pread(fd, max(os.fstat(fd).st_size, 1), 0)
        end = content.find(b"\0")
        return len(content) if end < 0 else end

    def entries(self) -> list[dict[str, str]]:
        """The outcomes written so far."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        found = []
        for line in raw.split(b"\0", 1)[0].decode("utf-8", "replace").splitlines():
            try:
                entry = json.loads(line)
                DeliveryState(entry["state"])
                found.append({k: str(entry[k]) for k in ("issue", "email", "state", "reply")})
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by the failure that made us write it
        return found

    def replay(self, ledger: Outcomes) -> int:
        """Record every journalled outcome in the ledger, then empty the journal."""
        entries = self.entries()
        for e in entries:
            ledger.record(e["issue"], e["email"], DeliveryState(e["state"]), e["reply"])
        self.discard()
        return len(entries)

    def replay_all(self, ledger: Outcomes) -> int:
        """replay() this journal and any another sender of this folder left behind."""
        paths = sorted(self.path.parent.glob(f"{JOURNAL_NAME}*"))
        return sum(Journal.at(path).replay(ledger) for path in paths)

    def discard(self) -> None:
        """Remove the file (its outcomes are in the ledger, or there were none)."""
        self.path.unlink(missing_ok=True)


class JournaledLedger:
    """The recorder of a real send: the ledger first, the journal when the ledger fails."""

    def __init__(self, ledger: Outcomes, journal: Journal | None = None) -> None:
        self.ledger = ledger
        self.journal = journal if journal is not None else Journal(ledger.state_dir)
        self.journalled = 0

    def record(
        self,
        issue: str,
        email: str,
        state: DeliveryState,
        reply: str = "",
        next_try_at: datetime | None = None,
    ) -> None:
        try:
            self.ledger.record(issue, email, state, reply, next_try_at)
        except MailerError as exc:
            try:
                self.journal.append(issue, email, state, reply)
                self.journalled += 1
                kept = f"kept in {self.journal.path}; the next send records it first"
            except OSError as err:
                kept = f"not even in the journal ({err.strerror}): note it down"
            raise RecordFailed(
                f"{email} was {state} ({reply}) but the ledger could not record it:"
                f" {exc.message}. Stopped; the outcome is {kept}",
                hint="free disk space or fix the ledger's permissions, then send again",
            ) from None
