"""Stream a subscriber CSV: validated, de-duplicated subscribers; problems and skips counted."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import sqlite3
import types
from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

from mailer.errors import InputError, printable

if TYPE_CHECKING:
    from email_validator import ValidatedEmail

# Statuses (as Mailchimp and friends export them) that mean "do not mail this row".
INACTIVE_STATUSES = frozenset({"unsubscribed", "bounced", "cleaned"})
RESERVED_COLUMNS = frozenset({"email", "name", "status"})

# Only this many Problems are kept per list; the counts stay exact. A hostile file could
# otherwise grow the lists without bound.
MAX_STORED = 1_000
# A physical line longer than this is refused as a row (its line named, the rest of the list
# kept), and never held whole in memory: it is read and dropped a chunk at a time.
MAX_LINE_CHARS = 1 << 20
# A field longer than this refuses its row. csv's own field_size_limit (128 KiB) would
# otherwise raise mid-file and refuse the whole list; it is lifted to MAX_LINE_CHARS instead.
MAX_FIELD_CHARS = 64 << 10
# A valid address is at most 254 UTF-8 bytes, so anything much longer is invalid; refusing it
# here spares email-validator, which takes ~100 ms on a 128 KiB field.
MAX_ADDRESS_CHARS = 1_000
# The raw value kept in a Problem is cut to this, for the same reason as MAX_STORED.
MAX_PROBLEM_EMAIL_CHARS = 320
# SQLite page cache for the dedupe table, in KiB: the table itself lives in a temp file.
DEDUPE_CACHE_KIB = 8_192

# Every break str.splitlines() knows, not only CR and LF: some header code splits on them.
_LINE_BREAKS = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")

# --- the address fast path ---------------------------------------------------------------
# validate_email costs ~70 µs a call. This regex accepts a strict SUBSET of what it accepts,
# for which its normalised form is known: the local part unchanged, the domain lower-cased.
# Anything else (quoting, Unicode, Punycode, R-LDH labels "ab--", numeric TLDs, special-use
# names, RFC 2142 mailbox names it lower-cases) goes to email-validator, which decides.
# The classes are spelled out rather than using re.IGNORECASE: with it, [a-z] also matches
# U+212A KELVIN SIGN and U+017F LONG S.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"(?![A-Za-z0-9-]{2}--)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_FAST = re.compile(rf"({_ATEXT}+(?:\.{_ATEXT}+)*)@((?:{_LABEL}\.)+([A-Za-z]{{2,63}}))")


@cache
def _slow_names() -> tuple[frozenset[str], frozenset[str]]:
    """(TLDs, local parts) the fast path leaves to email-validator, from its own lists.

    Read on the first address, not at import: email-validator compiles its patterns when
    imported (~13 ms), and `mailer build` or `mailer config` check no address.
    """
    from email_validator import SPECIAL_USE_DOMAIN_NAMES
    from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

    # Keyed by TLD so that a future multi-label entry ("home.arpa") still sends its whole TLD
    # to the slow path: the fast path may only ever shrink.
    tlds = frozenset(
        [d.rsplit(".", 1)[-1] for d in SPECIAL_USE_DOMAIN_NAMES]
        + ["arpa", "invalid", "local", "localhost", "onion", "test"]
    )
    return tlds, frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


def validate_email(address: str, *, check_deliverability: bool) -> ValidatedEmail:
    """email-validator's validate_email, the package imported on first use."""
    from email_validator import validate_email as validate

    return validate(address, check_deliverability=check_deliverability)


def _fast_normalize(address: str) -> str | None:
    """The normalised address if the fast path can vouch for it, else None (undecided)."""
    if len(address) > 254:
        return None
    m = _FAST.fullmatch(address)
    if m is None:
        return None
    local, domain, tld = m.groups()
    slow_tlds, slow_locals = _slow_names()
    if len(local) > 64 or tld.lower() in slow_tlds or local.lower() in slow_locals:
        return None
    return f"{local}@{domain.lower()}"


def check_email(address: str) -> str:
    """The normalised address (email-validator's, syntax only), or ValueError(reason)."""
    fast = _fast_normalize(address)
    if fast is not None:
        return fast
    from email_validator import EmailNotValidError

    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as e:
        raise ValueError(str(e)) from None


# --- records --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One person to mail: normalised address, display name and merge fields."""

    email: str
    name: str
    # hash=False keeps Subscriber hashable: a mapping is not.
    fields: Mapping[str, str] = field(hash=False)
    line: int


@dataclass(frozen=True, slots=True)
class Problem:
    """A row that was refused or skipped, and why."""

    line: int
    email: str
    reason: str


def clean(value: str) -> str:
    """Strip, and turn line breaks into spaces so no value can start a new mail header."""
    value = value.strip()
    # isprintable() is False for every line break: a cheap test before the regex.
    if not value.isprintable():
        value = _LINE_BREAKS.sub(" ", value).strip()
    return value


def _blank(cells: list[str]) -> bool:
    """True for a row with nothing but whitespace."""
    return not any(map(str.strip, cells))


def _short(raw: str) -> str:
    """The raw address as kept in a Problem: bounded in size, safe to print on one line."""
    if len(raw) > MAX_PROBLEM_EMAIL_CHARS:
        raw = raw[: MAX_PROBLEM_EMAIL_CHARS - 1] + "…"
    return printable(raw)


def csv_records(lines: Iterable[str], path: object) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) of each CSV record; a broken record is an InputError naming its
    first line. strict: an unclosed quote is an error instead of silently swallowing every
    row up to the next quote. skipinitialspace: `a@example.com, "Lee, Ann"` is quoted."""
    reader = csv.reader(lines, strict=True, skipinitialspace=True)
    done = 0
    try:
        for cells in reader:
            yield done + 1, cells
            done = reader.line_num
    except csv.Error as exc:
        raise InputError(
            f"cannot parse the CSV record starting here: {exc}",
            path=path,
            line=done + 1,
            hint='quote a field holding a quote whole, inner quotes doubled: "a ""b"""',
        ) from None


# --- the list -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    """Where the columns are."""

    email: int
    name: int | None
    status: int | None
    fields: tuple[tuple[str, int], ...]
    width: int


class Dedupe:
    """First line of each address, in a temp-file SQLite table keyed by a 64-bit hash."""

    def __init__(self) -> None:
        # "" = a private on-disk temp database, deleted on close; only its page cache is in
        # memory. check_same_thread=False: a sender may pull from the iterator in a worker.
        self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute(f"PRAGMA cache_size = -{DEDUPE_CACHE_KIB}")
        # INTEGER PRIMARY KEY is the rowid itself: the most compact table SQLite has.
        self._db.execute("CREATE TABLE seen (key INTEGER PRIMARY KEY, line INTEGER NOT NULL)")
        # One long transaction: nothing here needs to survive a crash.
        self._db.execute("BEGIN")
        # One cursor reused: a new one per row is a measurable share of the per-row cost.
        self._cur = self._db.cursor()

    def first_line(self, address: str, line: int) -> int:
        """Record address at line unless seen; return the line it was first seen on."""
        # 64 bits: two of 1,000,000 distinct addresses collide with odds of ~3e-8.
        digest = hashlib.blake2b(address.lower().encode(), digest_size=8).digest()
        key = int.from_bytes(digest, "big", signed=True)
        cur = self._cur.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (key, line))
        if cur.rowcount == 1:
            return line
        # sqlite3 rows are untyped; `line` is an INTEGER NOT NULL column.
        return cast(int, cur.execute("SELECT line FROM seen WHERE key = ?", (key,)).fetchone()[0])

    def close(self) -> None:
        """Drop the temp database."""
        self._db.close()


class SubscriberList:
    """Iterate once over a CSV's good subscribers; problems and skips are collected as it goes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.problems: list[Problem] = []
        self.skipped: list[Problem] = []
        self.problem_count = 0
        self.skipped_count = 0
        self.total_rows = 0
        # Data rows the first pass found: what total_rows will be once iterated (for "up to N").
        self.rows_in_file = 0
        self._iterated = False
        self._overlong: set[int] = set()  # physical lines dropped by _lines as too long
        with closing(self._records()) as records:
            header = self._parse_header(records)
            # A first pass (csv parsing only, 1-3 µs a row) so that every whole-file error
            # (not UTF-8, broken quoting, a runaway line) is raised here, before anyone is
            # mailed, rather than half-way through a send.
            for line, cells in records:
                if not _blank(cells) or line in self._overlong:
                    self.rows_in_file += 1
        # The merge-field columns, known before iterating (templates are checked against them).
        self.columns: tuple[str, ...] = tuple(name for name, _ in header.fields)

    def __iter__(self) -> Iterator[Subscriber]:
        if self._iterated:
            raise RuntimeError("a SubscriberList can be iterated only once; make a new one")
        self._iterated = True
        return self._rows()

    # -- reading

    def _open(self) -> IO[str]:
        """The file as text; utf-8-sig drops a BOM, newline='' leaves line breaks to csv."""
        try:
            return open(self.path, encoding="utf-8-sig", newline="")
        except FileNotFoundError:
            raise InputError("subscriber list not found", path=self.path) from None
        except OSError as e:
            raise InputError(f"cannot read subscriber list: {e.strerror}", path=self.path) from None

    def _records(self) -> Generator[tuple[int, list[str]], None, None]:
        """(first line, cells) of each record, blank ones too; whole-file errors as InputError."""
        with self._open() as f:
            if csv.field_size_limit() < MAX_LINE_CHARS:
                csv.field_size_limit(MAX_LINE_CHARS)
            try:
                yield from csv_records(self._lines(f), self.path)
            except UnicodeDecodeError:
                self._bad_utf8()
                raise

    def _lines(self, f: IO[str]) -> Iterator[str]:
        """Physical lines; one absurdly long is dropped (read a chunk at a time) and noted."""
        count = 0
        while line := f.readline(MAX_LINE_CHARS):
            count += 1
            if len(line) == MAX_LINE_CHARS and line[-1] not in "\r\n":
                while (rest := f.readline(MAX_LINE_CHARS)) and rest[-1] not in "\r\n":
                    pass
                self._overlong.add(count)
                line = "\n"  # an empty record in its place: _row refuses it by its line
            yield line

    def _bad_utf8(self) -> None:
        """Raise the InputError naming the first line that is not UTF-8."""
        # Only on the error path, so line by line is fine. Latin-1 maps byte n to character
        # n, and newline="" splits lines exactly as the csv reading does.
        with open(self.path, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding="latin-1", newline="")
            for number, line in enumerate(text, 1):
                data = line.encode("latin-1")
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(
                        f"not UTF-8 text (byte 0x{data[e.start]:02x} at column {e.start + 1})",
                        path=self.path,
                        line=number,
                        hint="save the list as 'CSV UTF-8' (Excel: Save As > CSV UTF-8)",
                    ) from None

    def _parse_header(self, records: Iterator[tuple[int, list[str]]]) -> _Header:
        """The first non-blank record; InputError without 'email' (an empty file has none)."""
        for line, cells in records:
            if _blank(cells):
                continue
            names = [c.strip().lower() for c in cells]
            seen: set[str] = set()
            for n in names:
                if n and n in seen:
                    raise InputError(f"column {n!r} appears twice", path=self.path, line=line)
                seen.add(n)
            if "email" not in seen:
                found = ", ".join(repr(c.strip()) for c in cells)
                hint = None
                if len(cells) == 1 and (";" in cells[0] or "\t" in cells[0]):
                    hint = "the columns must be separated by commas"
                raise InputError(
                    f"no 'email' column; the header has {found}",
                    path=self.path,
                    line=line,
                    hint=hint,
                )
            return _Header(
                email=names.index("email"),
                name=names.index("name") if "name" in seen else None,
                status=names.index("status") if "status" in seen else None,
                # A blank header cell (a trailing comma) names no field.
                fields=tuple(
                    (n, i) for i, n in enumerate(names) if n and n not in RESERVED_COLUMNS
                ),
                width=len(names),
            )
        # Empty (or only blank lines): most likely a failed export, not a list of nobody.
        # A header without rows is the way to say "nobody".
        raise InputError(
            "no 'email' column: the file is empty",
            path=self.path,
            hint="a subscriber list starts with a header line such as 'email,name'",
        )

    def _rows(self) -> Iterator[Subscriber]:
        """The generator behind __iter__."""
        with closing(self._records()) as records:
            header = self._parse_header(records)
            dedupe = Dedupe()
            try:
                for line, cells in records:
                    subscriber = self._row(cells, line, header, dedupe)
                    if subscriber is not None:
                        yield subscriber
            finally:
                dedupe.close()

    def _row(self, cells: list[str], line: int, h: _Header, dedupe: Dedupe) -> Subscriber | None:
        """One data row: a Subscriber, or None after recording why not."""
        if line in self._overlong or any(len(cell) > MAX_FIELD_CHARS for cell in cells):
            self.total_rows += 1
            longest = MAX_LINE_CHARS if line in self._overlong else MAX_FIELD_CHARS
            raw = cells[h.email].strip() if h.email < len(cells) else ""
            self._problem(line, raw, f"row refused: a field longer than {longest:,} characters")
            return None
        if len(cells) == h.width:
            raw = cells[h.email].strip()
            # A blank line, or ",,," as spreadsheets pad: not a row at all.
            if not raw and _blank(cells):
                return None
        elif _blank(cells):
            return None
        else:
            self.total_rows += 1
            raw = cells[h.email].strip() if h.email < len(cells) else ""
            self._problem(line, raw, f"expected {h.width} columns, found {len(cells)}")
            return None
        self.total_rows += 1
        status = cells[h.status].strip().lower() if h.status is not None else ""
        inactive = status in INACTIVE_STATUSES
        if not raw:
            if inactive:
                self._skip(line, raw, status)
            else:
                self._problem(line, raw, "missing address")
            return None
        try:
            if len(raw) > MAX_ADDRESS_CHARS:
                raise ValueError(f"The email address is too long ({len(raw):,} characters).")
            email = check_email(raw)
        except ValueError as e:
            if inactive:
                self._skip(line, raw, status)
            else:
                self._problem(line, raw, f"invalid address: {e}")
            return None
        # Inactive rows are recorded too: a later active row with the same address is then a
        # duplicate, so an unsubscribed reader is not mailed through a second row.
        first = dedupe.first_line(email, line)
        if inactive:
            self._skip(line, raw, status)
            return None
        if first != line:
            self._skip(line, raw, f"duplicate of line {first}")
            return None
        fields = {name: clean(cells[i]) for name, i in h.fields}
        return Subscriber(
            email=email,
            name=clean(cells[h.name]) if h.name is not None else "",
            fields=types.MappingProxyType(fields),
            line=line,
        )

    def _problem(self, line: int, raw: str, reason: str) -> None:
        """Count an invalid row; keep the first MAX_STORED."""
        self.problem_count += 1
        if len(self.problems) < MAX_STORED:
            self.problems.append(Problem(line, _short(raw), printable(reason)))

    def _skip(self, line: int, raw: str, reason: str) -> None:
        """Count a deliberately skipped row; keep the first MAX_STORED."""
        self.skipped_count += 1
        if len(self.skipped) < MAX_STORED:
            self.skipped.append(Problem(line, _short(raw), printable(reason)))
