"""Reasons not to send an issue at all: checked before a real send, shown by the preview."""

from __future__ import annotations

from email.utils import parseaddr

from mailer.compose.render import Email
from mailer.config import Settings
from mailer.errors import PreflightError


def preflight(email: Email, settings: Settings, *, dry_run: bool) -> list[str]:
    """Reasons not to send at all; warnings are the caller's to show."""
    reasons = []
    address = parseaddr(settings.from_)[1]
    if not settings.from_:
        reasons.append("no From address: set `from` in mailer.toml or MAILER_FROM")
    elif "@" not in address:
        reasons.append(f"From must look like 'Name <news@example.org>', not {settings.from_!r}")
    unfilled = email.unfilled()
    if unfilled:
        reasons.append(
            f"the rendered issue still holds unfilled template syntax: {', '.join(unfilled[:5])}"
        )
    if not email.has_unsubscribe_link():
        reasons.append("the template has no {{ unsubscribe_url }} link (in both HTML and text)")
    if not settings.unsubscribe_url:
        reasons.append(
            "no unsubscribe URL: set `unsubscribe_url` in mailer.toml or MAILER_UNSUBSCRIBE_URL"
        )
    if not dry_run and not settings.secret:
        reasons.append(
            "no MAILER_SECRET: unsubscribe links must be signed with your own secret (.env)"
        )
    return reasons


def check_preflight(email: Email, settings: Settings, *, dry_run: bool) -> None:
    """Raise PreflightError listing every reason not to send."""
    reasons = preflight(email, settings, dry_run=dry_run)
    if reasons:
        raise PreflightError(reasons)
