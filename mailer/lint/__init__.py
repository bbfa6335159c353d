"""`mailer lint`: the built email checked against caniemail.com, for accessibility, and its links.

    lint(email, settings)   -> Report: frozen Findings, nothing printed
    report.shown(finding)   -> whether `mailer lint` prints it without --verbose
    summary(report)         -> the one line `mailer build` prints
    as_dict(report)         -> the report as JSON-ready data (`mailer lint --format json`)

The stage, by job: report (the model and its summaries), check (lint itself), features
(caniemail's data and titles), uses (what the HTML and CSS use), clients, accessibility and
links (the three checks), colours (contrast), css (values compared in one form), fallbacks
(what the built-in template relies on some client ignoring, and why). Who is responsible for
a finding (the template, the issue's own text, the render, or MJML output) is decided in
origins alone, from template_source and issue_source; every check asks it.
"""

from __future__ import annotations

from mailer.lint.check import lint
from mailer.lint.colours import contrast_ratio
from mailer.lint.features import caniemail
from mailer.lint.report import (
    CLIENTS,
    Client,
    ClientSupport,
    Finding,
    Origin,
    OriginKind,
    Report,
    Section,
    Severity,
    Support,
    as_dict,
    select_clients,
    summary,
)

__all__ = [
    "CLIENTS",
    "Client",
    "ClientSupport",
    "Finding",
    "Origin",
    "OriginKind",
    "Report",
    "Section",
    "Severity",
    "Support",
    "as_dict",
    "caniemail",
    "contrast_ratio",
    "lint",
    "select_clients",
    "summary",
]
