"""One import: each CSV of the file read through its format, every address once, written
BATCH readers at a time, each batch one transaction. Whole-file problems stop it before
anything is written; a bad row is named (file, line, reason) and the others still come in.
Importing the same file again changes nothing."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mailer.errors import InputError, printable
from mailer.state.imports.formats import FORMATS, Format, Header, Refused, describe, detect
from mailer.state.imports.sources import Table, tables
from mailer.state.reader_rows import Forgotten, Wanted
from mailer.state.readers import CHUNK, Applied

BATCH = 5_000  # readers per transaction: large enough to amortise, small enough to stay flat
MAX_STORED = 1_000  # refused rows kept for display; the counts stay exact
_TABLE = 10**12  # a row's place across the file's tables: table * _TABLE + line


class Target(Protocol):
    """The ledger as an import writes it (state/readers.py)."""

    def apply_readers(
        self, wanted: Sequence[Wanted], *, forgotten: Forgotten, dry_run: bool = False
    ) -> Applied: ...
    def forgotten_keys(self) -> list[str]: ...


@dataclass(frozen=True)
class Note:
    """A row that did not come in: where, who, why."""

    where: str  # `file:line`, or `file.zip:member.csv:line`
    email: str
    reason: str


@dataclass
class Report:
    """What an import did (a dry run: would do); complete once run_import returns."""

    path: Path
    dry_run: bool
    formats: list[tuple[str, str]] = field(default_factory=list)  # (table, format)
    total: int = 0  # data rows in the file, counted before anything is written
    rows: int = 0  # data rows read so far
    added: int = 0
    changed: int = 0
    suppressed: int = 0
    unchanged: int = 0
    skipped: int = 0
    invalid: int = 0
    skipped_rows: list[Note] = field(default_factory=list)
    invalid_rows: list[Note] = field(default_factory=list)

    def note(self, table: Table, line: int, email: str, reason: str, *, invalid: bool) -> None:
        """Count a refused row; keep the first MAX_STORED of each kind."""
        kept = self.invalid_rows if invalid else self.skipped_rows
        if invalid:
            self.invalid += 1
        else:
            self.skipped += 1
        if len(kept) < MAX_STORED:
            kept.append(Note(f"{table.label}:{line}", printable(email[:320]), printable(reason)))


@dataclass(frozen=True)
class _Planned:
    table: Table
    header: Header
    format: Format
    rows: int


def _plan(path: Path, fmt: str) -> tuple[list[_Planned], list[str]]:
    """Each table's header, format and row count: a first pass that refuses a broken file
    (or a header no format knows) before anything is written. In a zip, a CSV that is no
    list (Substack's posts.csv) is left out: (the tables, the labels of those left out)."""
    planned, left_out = [], []
    found = tables(path)
    for table in found:
        records = table.records()
        first = next(records, None)
        if first is None:
            raise InputError("the file is empty: no header line", path=table.label)
        line, cells = first
        header = Header(cells)
        chosen = FORMATS[fmt] if fmt != "auto" else detect(header, table)
        if chosen is None or not chosen.detect(header.lower, table.name.lower()):
            if len(found) > 1:
                left_out.append(table.label)
                continue
            what = f"a {fmt} export's" if fmt != "auto" else "an export this tool knows"
            raise InputError(
                f"not {what} header (no email column?); the header has {describe(cells)}",
                path=table.label,
                line=line,
                hint="name the format with --format, or give the address column the name email",
            )
        planned.append(_Planned(table, header, chosen, sum(1 for _ in records)))
    if not planned:
        raise InputError(
            f"no list in the zip: none of {', '.join(left_out)} has an email column", path=path
        )
    # Who has left comes first: an address both unsubscribed and subscribed stays out.
    planned.sort(key=lambda p: not p.table.name.lower().startswith(("unsubscribed", "cleaned")))
    return planned, left_out


def run_import(
    target: Target,
    path: Path,
    *,
    fmt: str = "auto",
    tags: Sequence[str] = (),
    dry_run: bool = False,
    secret: str = "",
    on_progress: Callable[[Report], None] | None = None,
    batch: int = BATCH,
) -> Report:
    """Import `path` (a CSV or a zip of CSVs) into the store; `tags` go on every reader."""
    planned, left_out = _plan(path, fmt)
    report = Report(path, dry_run, [(p.table.label, p.format.name) for p in planned])
    report.formats += [(label, "left out: not a list") for label in left_out]
    report.total = sum(p.rows for p in planned)
    forgotten = Forgotten(secret, target.forgotten_keys())
    source = f"import:{path.name}"
    extra = tuple(tags)
    seen = _Seen()
    try:
        for number, plan in enumerate(planned):
            mapper = plan.format.mapper(plan.header, plan.table, source)
            wanted: list[Wanted] = []
            records = plan.table.records()
            next(records)  # the header
            for line, cells in records:
                report.rows += 1
                got = mapper(cells, line)
                if isinstance(got, Refused):
                    report.note(plan.table, line, got.email, got.reason, invalid=got.invalid)
                    continue
                if extra:
                    got = dataclasses.replace(got, tags=(*got.tags, *extra))
                wanted.append(got)
                if len(wanted) >= batch:
                    _write(target, seen, planned, number, wanted, forgotten, report)
                    if on_progress is not None:
                        on_progress(report)
            _write(target, seen, planned, number, wanted, forgotten, report)
    finally:
        seen.close()
    if on_progress is not None:
        on_progress(report)
    return report


class _Seen:
    """Where each address of this import was first read (table * _TABLE + line), asked a
    batch at a time: a temp-file SQLite table keyed by the address's hash, so that memory
    stays flat however long the file is."""

    def __init__(self) -> None:
        # "": a private temp-file database, deleted on close; only its page cache is in
        # memory. hash() is this process's own: fine for a table that dies with it, and
        # 64 bits (two of a million addresses collide with odds of ~3e-8).
        self._db = sqlite3.connect("", isolation_level=None)
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("CREATE TABLE seen (key INTEGER PRIMARY KEY, place INTEGER NOT NULL)")
        self._db.execute("BEGIN")  # nothing here needs to survive a crash

    def firsts(self, items: Sequence[tuple[str, int]]) -> list[int]:
        """For each (address key, place): where that address was first read."""
        hashes = [hash(key) for key, _ in items]
        known: dict[int, int] = {}
        unique = sorted(set(hashes))
        for start in range(0, len(unique), CHUNK):
            part = unique[start : start + CHUNK]
            marks = ", ".join("?" * len(part))
            rows = self._db.execute(f"SELECT key, place FROM seen WHERE key IN ({marks})", part)
            known.update(rows.fetchall())
        firsts, new = [], []
        for digest, (_, place) in zip(hashes, items, strict=True):
            if digest not in known:
                known[digest] = place
                new.append((digest, place))
            firsts.append(known[digest])
        self._db.executemany("INSERT INTO seen VALUES (?, ?)", sorted(new))
        return firsts

    def close(self) -> None:
        self._db.close()


def _write(
    target: Target,
    seen: _Seen,
    planned: list[_Planned],
    number: int,
    wanted: list[Wanted],
    forgotten: Forgotten,
    report: Report,
) -> None:
    """One batch of table `number`: its duplicates named, the rest written in one
    transaction (none in a dry run); the batch list is emptied."""
    if not wanted:
        return
    table = planned[number].table
    places = [number * _TABLE + w.line for w in wanted]
    firsts = seen.firsts([(w.key, place) for w, place in zip(wanted, places, strict=True)])
    fresh = []
    for want, place, first in zip(wanted, places, firsts, strict=True):
        if first == place:
            fresh.append(want)
        else:
            where = f"{planned[first // _TABLE].table.label}:{first % _TABLE}"
            report.note(table, want.line, want.email, f"duplicate of {where}", invalid=False)
    done = target.apply_readers(fresh, forgotten=forgotten, dry_run=report.dry_run)
    report.added += done.added
    report.changed += done.changed
    report.suppressed += done.suppressed
    report.unchanged += done.unchanged
    for want, reason in done.skipped:
        report.note(table, want.line, want.email, reason, invalid=False)
    wanted.clear()
