"""The client-support check: each caniemail feature the built email uses, per client.

The built HTML (after MJML and premailer: what readers get) is parsed with lxml and its CSS with
tinycss2: every <style> block, @media and other at-rules included, and every style attribute.
What is in it is matched to caniemail.com's features (mailer/data/caniemail.json, see
CANIEMAIL.md) the way @jsx-email/doiuse-email and caniemail's own checker do, from the features'
titles: a property ("border-radius"), a property and value ("display:flex"), a function, unit,
keyword, at-rule, media feature, selector kind, pseudo-class, element, attribute, element with
attribute, image format, comment. Each is looked up in the newest version caniemail lists for
each client platform: "n" is unsupported, "a" partial (with the data's numbered notes), "y" and
"u" (unknown) are not reported. Differences from doiuse-email, on purpose: longhands count for
their shorthand's feature only where caniemail means them to (margin-top: margin,
border-top-left-radius: border-radius); every function of a title counts ("lch(), oklch(),
lab(), oklab()"), and functions are matched at all (doiuse's lookup compares a title with a
name, and never matches); "<h1> to <h6>" is every heading and "<ul>, <ol> and <dl>" every list;
chaining means two classes on one element, not two in one selector; @media features
(prefers-color-scheme, ...) are read from the query; `inert` is the HTML attribute; units and
keywords match whole tokens. One finding per feature and origin, naming every client concerned.
"""

from __future__ import annotations

from typing import Any

from mailer.lint.features import CanIEmail, matchers
from mailer.lint.origins import Origins
from mailer.lint.report import (
    Client,
    ClientSupport,
    Finding,
    Origin,
    OriginKind,
    Section,
    Severity,
    Support,
)
from mailer.lint.uses import find_uses


def client_findings(
    html: str, doc: Any, data: CanIEmail, clients: tuple[Client, ...], origins: Origins
) -> list[Finding]:
    supports: dict[str, tuple[ClientSupport, ...]] = {}
    for slug, feature in data.features.items():
        found = tuple(s for c in clients if (s := feature.support(c)) is not None)
        if found:
            supports[slug] = found
    findings: dict[tuple[str, Origin], Finding] = {}
    for use in find_uses(html, doc, matchers()):
        if use.slug not in supports:
            continue
        origin = origins.of(use)
        key = (use.slug, origin)
        if key in findings:
            continue
        feature = data.features[use.slug]
        found = supports[use.slug]
        severity = (
            Severity.ERROR
            if any(s.support == Support.UNSUPPORTED for s in found)
            else Severity.WARNING
        )
        findings[key] = Finding(
            Section.CLIENTS, severity, use.slug, feature.title, origin, found, feature.url
        )
    order = {OriginKind.TEMPLATE: 0, OriginKind.ISSUE: 1, OriginKind.RENDER: 2, OriginKind.MJML: 3}
    return sorted(
        findings.values(),
        key=lambda f: (order[f.origin.kind], str(f.origin.path or ""), f.origin.line or 0, f.code),
    )
