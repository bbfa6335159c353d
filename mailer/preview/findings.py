"""What `mailer lint` says about the issue's own text, as rows beside the preview's warnings.

Only findings whose origin is the issue (the author can act on them; the template's and
MJML's are `mailer lint`'s to list). A finding the build already noticed on the same line
(an image without alt text, an http link) is shown once, as the build's warning. Client
findings are one row per feature, with every line that uses it.
"""

from __future__ import annotations

from typing import Any

from mailer.compose.render import Email
from mailer.config import Settings
from mailer.lint import Finding, OriginKind, Section, Severity, Support, lint

SHOWN_LINES = 8  # lines listed in a client finding's row before "and N more"


def lint_rows(
    email: Email, settings: Settings, rel: str, lines: list[str], noticed: set[tuple[str, int]]
) -> list[dict[str, Any]]:
    """The rows for the lint's findings about the issue, in the issue's reading order.

    `noticed`: (code, line) of the build's own notices, not repeated.
    """
    rows: list[dict[str, Any]] = []
    by_feature: dict[str, dict[str, Any]] = {}
    for finding in lint(email, settings).findings:
        line = finding.origin.line
        if finding.origin.kind != OriginKind.ISSUE or (finding.code, line) in noticed:
            continue
        if finding.section != Section.CLIENTS:
            rows.append(_row(finding, finding.title, rel, line, lines))
            continue
        row = by_feature.get(finding.code)
        if row is None:
            row = by_feature[finding.code] = _row(
                finding, f"{finding.title}: {_support(finding)}", rel, line, lines
            )
            rows.append(row)
        if line is not None and line not in row["lines"]:
            row["lines"].append(line)
    for row in by_feature.values():
        row["where"] = _where(rel, row["lines"])
    rows.sort(key=lambda r: r["line"] or 0)
    return rows


def _row(
    finding: Finding, message: str, rel: str, line: int | None, lines: list[str]
) -> dict[str, Any]:
    return {
        "level": "lint",
        "severity": "error" if finding.severity == Severity.ERROR else "warning",
        "section": finding.section.value,
        "code": finding.code,
        "message": message,
        "where": f"{rel}:{line}" if line else rel,
        "line": line,
        "lines": [line] if line else [],
        "source": excerpt(lines, line),
        "url": finding.url,
    }


def _support(finding: Finding) -> str:
    """'unsupported in Outlook (Windows); partial in Gmail (iOS), Yahoo (iOS)'."""
    parts = []
    for kind, word in ((Support.UNSUPPORTED, "unsupported"), (Support.PARTIAL, "partial")):
        names = [s.client.name for s in finding.clients if s.support == kind]
        if names:
            parts.append(f"{word} in {', '.join(names)}")
    return "; ".join(parts)


def _where(rel: str, found: list[int]) -> str:
    if not found:
        return rel
    shown = ", ".join(map(str, found[:SHOWN_LINES]))
    more = f" and {len(found) - SHOWN_LINES} more" if len(found) > SHOWN_LINES else ""
    return f"{rel}:{shown}{more}"


def excerpt(lines: list[str], line: int | None, limit: int = 200) -> str:
    """Line `line` (1-based) of the issue, stripped and cut to `limit` characters."""
    if not line or not 0 < line <= len(lines):
        return ""
    text = lines[line - 1].strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
