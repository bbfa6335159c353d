"""One render of an issue, as the preview shows it: the reader, the message, the warnings.

`build` reads, renders and personalises an issue for one reader (`choose_reader`: --as, else
the list's first subscriber, else a made-up one) into a `Snapshot`; `error_state` turns a
failed build into what the page's banner shows.
"""

from __future__ import annotations

import dataclasses
import email as email_pkg
import os
import time
import traceback
from email import policy
from pathlib import Path
from typing import Any

from mailer import config as config_mod
from mailer.compose import load
from mailer.compose.render import GMAIL_CLIP_BYTES, Email, render, template_dirs
from mailer.config import EXAMPLE_FROM, EXAMPLE_READER, EXAMPLE_SUBSCRIBERS, Settings
from mailer.deliver.message import Composer
from mailer.deliver.preflight import preflight
from mailer.errors import ConfigError, InputError, MailerError
from mailer.preview.findings import excerpt, lint_rows
from mailer.state.subscribers import Subscriber, SubscriberList, check_email

# Notices that were fixed on the way (shown, but not as something to act on).
_INFO_CODES = frozenset({"mojibake", "stylesheet"})


def stat_key(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is edited, replaced or removed (None: not there)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


# -- the reader whose copy is shown ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reader:
    """The subscriber the preview is personalised for, and where they came from."""

    subscriber: Subscriber
    source: str
    columns: tuple[str, ...] | None  # the list's merge-field columns, None without a list
    problem: str = ""  # why the list could not be used, if it could not


def subscriber_files(settings: Settings) -> list[Path]:
    return [settings.root / settings.subscribers, settings.root / EXAMPLE_SUBSCRIBERS]


_readers: dict[tuple[Any, ...], Reader] = {}


def choose_reader(settings: Settings, as_email: str | None) -> Reader:
    """--as EMAIL, else the first subscriber in the list, else a made-up reader."""
    files = subscriber_files(settings)
    key = (as_email, *((str(p), stat_key(p)) for p in files))
    if key not in _readers:  # --as may read a long list to its end: once per version of it
        _readers.clear()
        _readers[key] = _choose_reader(settings, as_email)
    return _readers[key]


def _choose_reader(settings: Settings, as_email: str | None) -> Reader:
    wanted = None
    if as_email:
        try:
            wanted = check_email(as_email.strip())
        except ValueError:
            wanted = as_email.strip()
    path = next((p for p in subscriber_files(settings) if p.is_file()), None)
    if path is None:
        if wanted:
            return Reader(Subscriber(wanted, "", {}, 0), "--as (no subscriber list)", None)
        return Reader(
            Subscriber(EXAMPLE_READER, "", {}, 0), "an example reader (no subscriber list)", None
        )
    label = relative(path, settings.root)
    try:
        listing = SubscriberList(path)
        rows = iter(listing)
        try:
            for sub in rows:
                if wanted is None or sub.email.lower() == wanted.lower():
                    where = "--as, " if wanted else "the first subscriber, "
                    return Reader(sub, f"{where}{label} line {sub.line}", listing.columns)
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()
    except InputError as exc:
        fallback = wanted or EXAMPLE_READER
        return Reader(
            Subscriber(fallback, "", {}, 0),
            "--as" if wanted else "an example reader",
            None,
            problem=f"subscriber list unusable: {exc.message}",
        )
    if wanted:
        return Reader(Subscriber(wanted, "", {}, 0), f"--as (not in {label})", listing.columns)
    return Reader(
        Subscriber(EXAMPLE_READER, "", {}, 0),
        f"an example reader ({label} has nobody)",
        listing.columns,
    )


# -- one render: everything the page shows ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One successful render, personalised: what the page and the static files are made of."""

    email: Email
    html: str  # filled in for the reader
    text: str
    message: bytes  # the reader's whole message, as it would go on the wire
    state: dict[str, Any]  # JSON for the page (without version/error)


def relative(path: Path | str, root: Path) -> str:
    p = Path(path)
    try:
        return str(p.resolve().relative_to(root.resolve()))
    except (ValueError, OSError):
        return str(p)


def source_lines(path: Path) -> list[str]:
    try:
        return path.read_bytes().decode("utf-8-sig", errors="replace").splitlines()
    except OSError:
        return []


def _headers(message: bytes) -> tuple[list[list[str]], list[dict[str, Any]], str]:
    """(name, value) pairs as a mail client decodes them, the MIME parts, the raw header block."""
    parsed = email_pkg.message_from_bytes(message, policy=policy.default)
    headers = [[name, str(value)] for name, value in parsed.items()]
    parts = []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True) or b""
        parts.append(
            {
                "type": part.get_content_type(),
                "charset": part.get_content_charset() or "",
                "encoding": str(part.get("Content-Transfer-Encoding", "")),
                "bytes": len(payload),
            }
        )
    raw = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", errors="replace").replace("\r\n", "\n")
    return headers, parts, raw


def build(settings: Settings, path: Path, as_email: str | None) -> Snapshot:
    """Read, render and personalise the issue at `path`; MailerError if it cannot be rendered."""
    started = time.perf_counter()
    issue = load.read(settings, path)
    email = render(issue, settings)
    reader = choose_reader(settings, as_email)
    problems: list[tuple[str, str, str]] = []  # (code, message, where), before the notices
    try:
        composer = Composer(email, settings)
    except ConfigError:  # no usable From: preflight below says so; show the rest anyway
        composer = Composer(email, config_mod.with_overrides(settings, from_=EXAMPLE_FROM))
    html, text = composer.personalise(
        reader.subscriber, composer.unsubscribe_url(reader.subscriber.email) or "#unsubscribe"
    )
    message = composer.compose(reader.subscriber).data
    headers, parts, raw_headers = _headers(message)

    rel = relative(path, settings.root)
    reasons = preflight(email, settings, dry_run=False)
    problems += [("send", reason, _reason_source(reason)) for reason in reasons]
    if reader.columns is not None:
        try:
            composer.check_fields(set(reader.columns))
        except InputError as exc:
            if exc.line:  # a field in the issue: its line, once
                said = exc.message.removeprefix(f"{exc.path}:{exc.line}: ")
                problems.append(("fields", said, f"{rel}:{exc.line}"))
            else:
                problems.append(("fields", exc.message, "template and subscriber list"))
    warnings = _warnings(email, problems, reader, path, rel)
    noticed = {(n.code, n.line) for n in email.notices if n.line}
    warnings += lint_rows(email, settings, rel, source_lines(path), noticed)

    sub = reader.subscriber
    state = {
        "issue": {
            "slug": issue.slug,
            "path": rel,
            "title": issue.title,
            "lang": issue.lang,
            "dir": issue.dir,
        },
        "subject": email.subject,
        "preheader": composer.preheader(reader.subscriber),
        "from": composer.settings.from_,
        "reader": {"email": sub.email, "name": sub.name, "source": reader.source},
        "html": html,
        "text": text,
        "own_dark_mode": "prefers-color-scheme" in email.html,
        "stats": {
            "html_bytes": email.html_bytes,
            "clip_bytes": GMAIL_CLIP_BYTES,
            "text_bytes": len(email.text.encode("utf-8")),
            "words": email.words,
            "links": email.links,
            "images": email.images,
        },
        "headers": headers,
        "raw_headers": raw_headers,
        "parts": parts,
        "message_bytes": len(message),
        "warnings": warnings,
        "templates": [relative(d, settings.root) for d in dict.fromkeys(template_dirs(settings))],
        "render_ms": round((time.perf_counter() - started) * 1000),
    }
    return Snapshot(email, html, text, message, state)


def _reason_source(reason: str) -> str:
    if "template" in reason:
        return "template"
    if "MAILER_SECRET" in reason:
        return "settings (.env)"
    return "settings (mailer.toml)"


_NOTICE_SOURCES = {"size": "rendered HTML", "unsubscribe": "template", "stylesheet": "template"}


def _warnings(
    email: Email, problems: list[tuple[str, str, str]], reader: Reader, path: Path, rel: str
) -> list[dict[str, Any]]:
    """Everything worth a look, most serious first, each with where it comes from."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(
        level: str, code: str, message: str, where: str, line: int | None = None, source: str = ""
    ) -> None:
        if message not in seen:
            seen.add(message)
            out.append(
                {
                    "level": level,
                    "code": code,
                    "message": message,
                    "where": where,
                    "line": line,
                    "source": source,
                }
            )

    for code, message, where in problems:
        add("error", code, message, where)
    if reader.problem:
        add("warning", "subscribers", reader.problem, "subscriber list")
    lines = source_lines(path)
    for notice in email.notices:
        add(
            "info" if notice.code in _INFO_CODES else "warning",
            notice.code,
            notice.message,
            f"{rel}:{notice.line}" if notice.line else _NOTICE_SOURCES.get(notice.code, rel),
            notice.line,
            excerpt(lines, notice.line),
        )
    order = {"error": 0, "warning": 1, "info": 2}
    out.sort(key=lambda w: (order[w["level"]], w["line"] or 0))
    return out


def error_state(exc: BaseException, settings: Settings) -> dict[str, Any]:
    """What the banner shows for a failed render: message, hint, and the lines around it."""
    if isinstance(exc, MailerError):
        out: dict[str, Any] = {
            "kind": type(exc).__name__,
            "message": exc.message.replace(f"{settings.root.resolve()}{os.sep}", ""),
            "hint": exc.hint or "",
            "context": [],
            "where": "",
        }
        path, line = getattr(exc, "path", None), getattr(exc, "line", None)
        if path is not None:
            rel = relative(path, settings.root)
            out["where"] = rel + (f":{line}" if line else "")
            if exc.message.startswith(f"{path}:"):  # a long absolute path -> the project's
                out["message"] = rel + exc.message[len(str(path)) :]
        if path is not None and line:
            lines = source_lines(Path(str(path)))
            first = max(1, line - 3)
            out["context"] = [
                {"n": n, "text": lines[n - 1], "hit": n == line}
                for n in range(first, min(len(lines), line + 2) + 1)
            ]
        return out
    return {
        "kind": "internal error",
        "message": f"{type(exc).__name__}: {exc}",
        "hint": "this is a bug in mailer, not in your issue; the traceback is below",
        "context": [],
        "where": "",
        "traceback": "".join(traceback.format_exception(exc)),
    }
