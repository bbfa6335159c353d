"""lint(): the client-support, accessibility and link checks of one built email, one Report."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from lxml import html as lxml_html  # type: ignore[import-untyped]

from mailer.compose.render import BUILTIN_TEMPLATES, Email
from mailer.config import Settings
from mailer.lint.accessibility import accessibility_findings
from mailer.lint.clients import client_findings
from mailer.lint.fallbacks import designed
from mailer.lint.features import caniemail
from mailer.lint.issue_source import IssueSource
from mailer.lint.links import link_findings
from mailer.lint.origins import Origins
from mailer.lint.report import CLIENTS, Client, Finding, Origin, Report, Section, Severity
from mailer.lint.template_source import Template


def lint(email: Email, settings: Settings, *, clients: Sequence[Client] | None = None) -> Report:
    """Check a rendered email: clients, accessibility, links, front matter. Prints nothing."""
    chosen = tuple(clients) if clients else CLIENTS
    data = caniemail()
    doc = lxml_html.document_fromstring(email.html)
    template = Template.load(settings)
    issue = IssueSource(email.issue, template.content_class, doc)
    origins = Origins(doc, template, issue)
    findings = client_findings(email.html, doc, data, chosen, origins)
    findings += accessibility_findings(doc, email, origins)
    findings += link_findings(doc, email, origins)
    findings += [
        Finding(Section.FRONT_MATTER, Severity.WARNING, n.code, n.message, origins.in_issue(n.line))
        for n in email.notices
        if n.code == "front-matter"  # mailer.compose.issue: a `#` YAML read as a comment
    ]
    return Report(
        issue=email.issue.slug,
        root=settings.root,
        findings=tuple(designed(_dedupe(findings))),
        clients=chosen,
        data_date=data.last_update,
        data_source=data.source,
        builtin=BUILTIN_TEMPLATES,
    )


def _dedupe(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per (section, code, origin); the first one found stays."""
    seen: dict[tuple[Section, str, Origin, str], Finding] = {}
    for finding in findings:
        key = (finding.section, finding.code, finding.origin, _dedupe_text(finding))
        seen.setdefault(key, finding)
    return list(seen.values())


def _dedupe_text(finding: Finding) -> str:
    # Client findings merge per feature and origin; other checks keep each distinct message
    # (two low-contrast colours set on one template line are two findings).
    return "" if finding.section == Section.CLIENTS else finding.title
