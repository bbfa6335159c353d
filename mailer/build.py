"""`mailer build`: an issue's email.html and email.txt as an example reader would get them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mailer import config as config_mod
from mailer.compose import load
from mailer.compose import render as render_mod
from mailer.compose.render import Email
from mailer.config import Settings
from mailer.deliver.message import Composer
from mailer.deliver.preflight import check_issue_fields
from mailer.state.subscribers import Subscriber


@dataclass(frozen=True)
class Built:
    """What `build` wrote, and how long it took."""

    email: Email
    html_path: Path
    text_path: Path
    elapsed: float  # seconds


def sample(settings: Settings, email: Email) -> tuple[str, str]:
    """The HTML and text as an example reader would see them (a stand-in From if none)."""
    if not settings.from_:
        settings = config_mod.with_overrides(settings, from_=config_mod.EXAMPLE_FROM)
    composer = Composer(email, settings)
    reader = Subscriber(email=config_mod.EXAMPLE_READER, name="", fields={}, line=0)
    return composer.personalise(reader, composer.unsubscribe_url(reader.email) or "#unsubscribe")


def build(settings: Settings, issue: str, out: Path | None = None) -> Built:
    """Render `issue` and write email.html and email.txt to `out` (build/ISSUE)."""
    started = time.perf_counter()
    # campaign.load's two steps, without importing campaign: that module is the sending
    # side (ledger, transports, the send loop, DKIM keys), which a build never uses.
    email = render_mod.render(load.by_name(settings, issue), settings)
    check_issue_fields(email, settings)
    out = out or settings.root / "build" / email.issue.slug
    out.mkdir(parents=True, exist_ok=True)
    html, text = sample(settings, email)
    html_path, text_path = out / "email.html", out / "email.txt"
    html_path.write_text(html, encoding="utf-8")
    text_path.write_text(text, encoding="utf-8")
    return Built(email, html_path, text_path, time.perf_counter() - started)
