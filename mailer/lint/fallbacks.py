"""The fallbacks the built-in template is designed around: unsupported somewhere, on purpose.

Each feature here is one the built-in template (or MJML's output for it) uses knowing some
client ignores it, and what that client shows instead. Where the template or MJML uses one,
the finding is a warning that carries the reason, not an error: `mailer lint --strict`
passes on the built-in template, and a template copied from it keeps the same fallbacks.
The same feature written in the issue stays an error: there it is the author's choice.
A template change that adds another unsupported feature fails tests/test_lint.py until it
is fixed, or listed here with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType

from mailer.lint.report import Finding, OriginKind, Section, Severity

FALLBACKS: Mapping[str, str] = MappingProxyType(
    {
        "css-at-media": "responsive columns and dark mode; Outlook (Windows) gets MJML's "
        "fixed-width <!--[if mso]> tables instead",
        "css-at-media-prefers-color-scheme": "dark mode where the client offers it; Gmail, "
        "Outlook (Windows) and Yahoo invert the light design themselves",
        "css-color-scheme": "the dark-mode opt-in Apple Mail needs; ignored elsewhere",
        "html-meta-color-scheme": "the dark-mode opt-in Apple Mail needs; ignored elsewhere",
        "css-selector-attribute": "Outlook.com's dark-mode rules ([data-ogsc], [data-ogsb]), "
        "in their own <style> so a client that drops them drops nothing else",
        "html-body": "replaced by a <div> or dropped; the page colour is also on the wrapper",
        "css-border-radius": "rounded corners; square in Outlook (Windows)",
        "css-height": "height:auto on images; Yahoo's min-height:auto changes nothing",
        "css-overflow": "code blocks scroll where it works and wrap elsewhere; MJML also "
        "hides the preheader with display:none and mso-hide:all",
        "css-white-space": "code blocks wrap (pre-wrap); a <pre> keeps its line breaks without it",
        "css-word-wrap": "long words in code blocks break where it works; the line wraps anyway",
        "css-overflow-wrap": "long words in table cells break in Apple Mail; elsewhere cells "
        "wrap at spaces",
        "css-word-break": "MJML's break-word on text cells and the tables' reset to normal; "
        "Yahoo wraps at spaces",
        "css-max-height": "MJML's hidden preheader, also hidden by display:none and mso-hide:all",
        "css-opacity": "MJML's hidden preheader, also hidden by display:none and mso-hide:all",
        "css-outline": "MJML's image reset (outline:none); Outlook (Windows) draws none anyway",
        "css-word-spacing": "MJML's reset of the page; the client's default spacing is the same",
        "html-aria-label": "MJML's label of the email (its subject) for screen readers; the "
        "layout tables also carry role=presentation",
        "html-doctype": "MJML's <!doctype html>; caniemail: no impact where unsupported",
        "css-cursor": "MJML's buttons (cursor:auto); where ignored, the client's own pointer",
        "html-target": "MJML's buttons open in a new tab (target=_blank); where dropped, the "
        "client opens the link its own way, as it does every other link",
    }
)
_NOT_THE_ISSUE = frozenset({OriginKind.TEMPLATE, OriginKind.MJML, OriginKind.RENDER})


def designed(findings: Iterable[Finding]) -> list[Finding]:
    """Unsupported features the template is designed around -> warnings with the reason."""
    out = []
    for f in findings:
        reason = FALLBACKS.get(f.code, "")
        if (
            reason
            and f.section == Section.CLIENTS
            and f.severity == Severity.ERROR
            and f.origin.kind in _NOT_THE_ISSUE
        ):
            f = replace(f, severity=Severity.WARNING, fallback=reason)
        out.append(f)
    return out
