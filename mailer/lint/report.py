"""The lint report: findings, where each was written, the clients concerned; summed up."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any


class Severity(StrEnum):
    """How much a finding matters: `mailer lint --strict` fails on errors."""

    ERROR = "error"  # unsupported in a client; an accessibility or link error
    WARNING = "warning"  # partial support; worth a look


class Section(StrEnum):
    CLIENTS = "client support"
    ACCESSIBILITY = "accessibility"
    LINKS = "links"
    FRONT_MATTER = "front matter"


class Support(StrEnum):
    """A client's support for a feature, when it is worth reporting."""

    UNSUPPORTED = "unsupported"  # caniemail's "n"
    PARTIAL = "partial"  # caniemail's "a"


class OriginKind(StrEnum):
    TEMPLATE = "template"
    ISSUE = "issue"
    MJML = "mjml"  # written by MJML itself
    RENDER = "render"  # written by mailer's render on an issue's element (image sizes)


@dataclass(frozen=True)
class Client:
    key: str  # caniemail's family.platform: outlook.windows
    name: str  # Outlook (Windows)

    @property
    def family(self) -> str:
        return self.key.split(".")[0]


CLIENTS = (
    Client("gmail.desktop-webmail", "Gmail (webmail)"),
    Client("gmail.ios", "Gmail (iOS)"),
    Client("gmail.android", "Gmail (Android)"),
    Client("outlook.windows", "Outlook (Windows)"),
    Client("outlook.macos", "Outlook (macOS)"),
    Client("outlook.outlook-com", "Outlook.com"),
    Client("outlook.ios", "Outlook (iOS)"),
    Client("outlook.android", "Outlook (Android)"),
    Client("apple-mail.macos", "Apple Mail (macOS)"),
    Client("apple-mail.ios", "Apple Mail (iOS)"),
    Client("yahoo.desktop-webmail", "Yahoo (webmail)"),
    Client("yahoo.ios", "Yahoo (iOS)"),
    Client("yahoo.android", "Yahoo (Android)"),
)
FAMILIES = {"gmail": "Gmail", "outlook": "Outlook", "apple-mail": "Apple Mail", "yahoo": "Yahoo"}
_CLIENT_ALIASES = {
    "apple": "apple-mail",
    "applemail": "apple-mail",
    "outlook.com": "outlook.outlook-com",
    "gmail.webmail": "gmail.desktop-webmail",
    "yahoo.webmail": "yahoo.desktop-webmail",
}


def select_clients(spec: str | None) -> tuple[Client, ...]:
    """`gmail,outlook.windows` -> those clients; None or "" -> all. ValueError names the choices."""
    if not spec:
        return CLIENTS
    chosen: set[Client] = set()
    for word in (w.strip().lower() for w in spec.split(",")):
        if not word:
            continue
        key = _CLIENT_ALIASES.get(word, word)
        found = [c for c in CLIENTS if key in (c.key, c.family)]
        if not found:
            families = ", ".join(FAMILIES)
            raise ValueError(
                f"unknown client {word!r}: use {families}, or one platform such as "
                "outlook.windows (`mailer lint --help` lists them)"
            )
        chosen.update(found)
    return tuple(c for c in CLIENTS if c in chosen)


@dataclass(frozen=True)
class ClientSupport:
    client: Client
    support: Support
    version: str  # the version (or test date) caniemail's entry is for
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Origin:
    """Where a finding comes from: a file and line, or MJML's own output.

    RENDER names the issue line of the element the render wrote it on.
    """

    kind: OriginKind
    path: Path | None = None
    line: int | None = None

    def shown(self, root: Path) -> str:
        if self.path is None:
            return "MJML output"
        path = _shown_path(self.path, root)
        return f"{path}:{self.line}" if self.line else str(path)


@dataclass(frozen=True)
class Finding:
    section: Section
    severity: Severity
    code: str  # a caniemail feature slug (css-border-radius), or a check: alt, contrast, http
    title: str  # the feature's title, or what the check found
    origin: Origin
    clients: tuple[ClientSupport, ...] = ()
    url: str = ""  # the feature's caniemail.com page
    fallback: str = ""  # why the template relies on a fallback here (lint.fallbacks)


@dataclass(frozen=True)
class Report:
    issue: str  # the issue's name
    root: Path  # the project, for showing paths
    findings: tuple[Finding, ...]
    clients: tuple[Client, ...]  # the clients checked
    data_date: str  # caniemail data: last update
    data_source: str  # caniemail data: the package and version it came from
    builtin: Path | None = None  # the built-in templates' folder: what is written there is mailer's

    def of(self, section: Section) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.section == section)

    @property
    def errors(self) -> int:
        return sum(f.severity == Severity.ERROR for f in self.findings)

    def yours(self, finding: Finding) -> bool:
        """Written by the author: in the issue, or in a template of the project's own."""
        origin = finding.origin
        if origin.kind == OriginKind.ISSUE:
            return True
        if origin.kind != OriginKind.TEMPLATE or origin.path is None:
            return False  # MJML's output and the render's image sizes are mailer's
        return self.builtin is None or not origin.path.resolve().is_relative_to(
            self.builtin.resolve()
        )

    def shown(self, finding: Finding) -> bool:
        """What lint says without --verbose: every error, the author's other checks' warnings.

        Partial client support (caniemail's caveats) and what the built-in template, the
        render and MJML do by design are listed with --verbose only.
        """
        if finding.severity == Severity.ERROR:
            return True
        return finding.section != Section.CLIENTS and self.yours(finding)


def summary(report: Report) -> str:
    """One line for `mailer build`: what `mailer lint` shows by default, counted."""
    shown = [f for f in report.findings if report.shown(f)]
    if not shown:
        return f"lint: nothing to fix for {_count(len(report.clients), 'email client')}"
    return f"lint: {counts(shown)} — mailer lint {report.issue} to see them"


def counts(findings: list[Finding]) -> str:
    """The findings by severity: 2 errors, 1 warning; or 3 warnings."""
    errors = sum(f.severity == Severity.ERROR for f in findings)
    parts = [_count(errors, "error"), _count(len(findings) - errors, "warning")]
    return ", ".join(part for part in parts if not part.startswith("0 "))


def as_dict(report: Report) -> dict[str, Any]:
    """The report as plain data, for `--format json`."""
    return {
        "issue": report.issue,
        "caniemail": {"last_update": report.data_date, "source": report.data_source},
        "clients": [{"client": c.key, "name": c.name} for c in report.clients],
        "findings": [
            {
                "section": f.section.value,
                "severity": f.severity.value,
                "code": f.code,
                "title": f.title,
                "origin": {
                    "kind": f.origin.kind.value,
                    "path": str(_shown_path(f.origin.path, report.root)) if f.origin.path else None,
                    "line": f.origin.line,
                    "shown": f.origin.shown(report.root),
                },
                "clients": [
                    {
                        "client": s.client.key,
                        "name": s.client.name,
                        "support": s.support.value,
                        "version": s.version,
                        "notes": list(s.notes),
                    }
                    for s in f.clients
                ],
                "url": f.url,
                "fallback": f.fallback or None,
            }
            for f in report.findings
        ],
        "summary": {
            "client_support": len(report.of(Section.CLIENTS)),
            "accessibility": len(report.of(Section.ACCESSIBILITY)),
            "links": len(report.of(Section.LINKS)),
            "front_matter": len(report.of(Section.FRONT_MATTER)),
            "errors": report.errors,
        },
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _shown_path(path: Path, root: Path) -> Path:
    full, base = path.resolve(), root.resolve()
    return full.relative_to(base) if full.is_relative_to(base) else full
