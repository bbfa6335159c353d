"""The links check.

Schemes other than http, https, mailto and tel, empty and relative links, http://. The
issue's own notices about its links are passed through.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from mailer.compose.render import Email
from mailer.compose.slots import SLOT_RE
from mailer.lint.origins import Origins
from mailer.lint.report import Finding, OriginKind, Section, Severity

EMAIL_SCHEMES = frozenset({"http", "https", "mailto", "tel"})
# The issue's notices about links (mailer.compose.issue): passed through, with these severities.
LINK_NOTICES = {
    "scheme": Severity.ERROR,
    "empty-link": Severity.ERROR,
    "relative": Severity.ERROR,
    "liquid": Severity.ERROR,
    "http": Severity.WARNING,
    "reference": Severity.WARNING,
}


def link_findings(doc: Any, email: Email, origins: Origins) -> list[Finding]:
    findings: list[Finding] = []
    for a in doc.iter("a"):
        href = a.get("href")
        if href is None or SLOT_RE.search(href):
            continue  # no link, or a per-reader value filled at send time
        found = _link_problem(href.strip())
        if found is not None:
            severity, code, message = found
            findings.append(Finding(Section.LINKS, severity, code, message, origins.link(a)))
    own = {(f.code, f.origin.line) for f in findings if f.origin.kind == OriginKind.ISSUE}
    for notice in email.notices:
        if notice.code in LINK_NOTICES and (notice.code, notice.line) not in own:
            findings.append(
                Finding(
                    Section.LINKS,
                    LINK_NOTICES[notice.code],
                    notice.code,
                    notice.message,
                    origins.in_issue(notice.line),
                )
            )
    return findings


def _link_problem(href: str) -> tuple[Severity, str, str] | None:
    if not href:
        return Severity.ERROR, "empty-link", "link with an empty target"
    try:
        scheme = urlsplit(href).scheme.lower()
    except ValueError:
        return Severity.ERROR, "scheme", f"link that is not a URL: {href}"
    if scheme and scheme not in EMAIL_SCHEMES:
        return (
            Severity.ERROR,
            "scheme",
            f"link with the scheme '{scheme}:' (email links are http, https, mailto or tel): "
            f"{href}",
        )
    if scheme == "http":
        return Severity.WARNING, "http", f"link is not https: {href}"
    if not scheme and not href.startswith("#"):
        return Severity.ERROR, "relative", f"relative link cannot work in an email: {href}"
    return None
