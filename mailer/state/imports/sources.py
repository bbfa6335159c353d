"""The CSV tables of an import file: the file itself, or each .csv member of a zip (as
Mailchimp and Substack export), read as a stream of records with their first line numbers.
Whole-file problems (not a zip, not UTF-8, a quote never closed) are one InputError naming
the file, the member and the line."""

from __future__ import annotations

import contextlib
import csv
import io
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from mailer.errors import InputError, printable
from mailer.state.subscribers import csv_records

# A record longer than this is refused with the whole file (csv's own limit is 128 KiB).
MAX_FIELD_CHARS = 1 << 20


@dataclass(frozen=True)
class Table:
    """One CSV of an import: the file, or a member of a zip."""

    path: Path  # the file given
    member: str  # the member's name in the zip; "" for a plain CSV file

    @property
    def name(self) -> str:
        """The CSV's own file name (Mailchimp says a member's status in it)."""
        return PurePosixPath(self.member).name if self.member else self.path.name

    @property
    def label(self) -> str:
        """How messages name it: `export.zip:subscribed_members_export_1a.csv`, `list.csv`."""
        shown = f"{self.path.name}:{self.member}" if self.member else self.path.name
        return printable(shown)

    @contextlib.contextmanager
    def open(self) -> Iterator[IO[str]]:
        """The CSV as text; utf-8-sig drops a BOM, newline='' leaves line breaks to csv."""
        try:
            if not self.member:
                with open(self.path, encoding="utf-8-sig", newline="") as f:
                    yield f
                return
            with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as raw:
                yield io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        except FileNotFoundError:
            raise InputError("no such file", path=self.path) from None
        except (OSError, zipfile.BadZipFile, zlib.error) as exc:
            raise InputError(f"cannot read it: {exc}", path=self.label) from None

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """(first line, cells) of every record, the header first; blank records left out."""
        if csv.field_size_limit() < MAX_FIELD_CHARS:
            csv.field_size_limit(MAX_FIELD_CHARS)
        with self.open() as f:
            try:
                for line, cells in csv_records(f, self.label):
                    # The first cell decides for almost every row: no generator per row.
                    if cells and (cells[0].strip() or any(c.strip() for c in cells)):
                        yield line, cells
            except UnicodeDecodeError:
                raise InputError(
                    "not UTF-8 text",
                    path=self.label,
                    line=self._first_bad_line(),
                    hint="export the list again as UTF-8 CSV",
                ) from None

    def _first_bad_line(self) -> int | None:
        """The first line that is not UTF-8 (text is decoded a chunk ahead of the CSV)."""
        with contextlib.ExitStack() as stack:
            if self.member:
                archive = stack.enter_context(zipfile.ZipFile(self.path))
                raw: IO[bytes] = stack.enter_context(archive.open(self.member))
            else:
                raw = stack.enter_context(open(self.path, "rb"))
            for number, line in enumerate(raw, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    return number
        return None


def tables(path: Path) -> list[Table]:
    """The CSVs in `path`: its .csv members if it is a zip, else the file itself."""
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "not a file", path=path)
    if not zipfile.is_zipfile(path):
        return [Table(path, "")]
    try:
        with zipfile.ZipFile(path) as archive:
            names = [
                info.filename
                for info in archive.infolist()
                if not info.is_dir()
                and info.filename.lower().endswith(".csv")
                and not PurePosixPath(info.filename).name.startswith(("._", "."))
                and "__MACOSX" not in info.filename
            ]
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"cannot read the zip: {exc}", path=path) from None
    if not names:
        raise InputError("the zip holds no .csv file", path=path)
    return [Table(path, name) for name in names]
