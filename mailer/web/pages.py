"""The pages mailer's web side answers with: a Response, small pages of our own, errors."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from http import HTTPStatus

from mailer.web import wsgi

NO_STORE = "no-store"

# Pages of our own: nothing to load but inline style; the one form posts back to us.
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


# -- responses ------------------------------------------------------------------------------


@dataclass
class Response:
    """What a route answers; the headers every response carries are added when it is sent."""

    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    csp: str = PAGE_CSP
    cache: str = NO_STORE
    headers: list[tuple[str, str]] = field(default_factory=list)

    def wsgi_headers(self) -> list[tuple[str, str]]:
        return wsgi.headers(
            self.content_type, len(self.body), csp=self.csp, cache=self.cache, extra=self.headers
        )


_STYLE = """
  body { font: 16px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
         background: #f3f4f6; margin: 0; padding: 48px 16px; }
  main { max-width: 32rem; margin: 0 auto; background: #fff; border-radius: 8px;
         padding: 24px 28px; }
  h1 { font-size: 1.4rem; line-height: 1.3; margin: 0 0 12px; }
  p { margin: 0 0 12px; }
  button { font: inherit; font-weight: 600; color: #fff; background: #cf222e; border: 0;
           border-radius: 6px; padding: 10px 18px; cursor: pointer; }
  ul { padding-left: 1.2rem; }
  li { margin: 0 0 12px; }
  a { color: #0b62d6; }
  .muted { color: #57606a; font-size: .9rem; }
"""


def page(
    status: int,
    title: str,
    body: str,
    *,
    lang: str = "en",
    robots: bool = False,
    cache: str = NO_STORE,
) -> Response:
    """A small page of our own; `title` is text (escaped here), `body` is HTML built escaped."""
    text = (
        "<!doctype html>\n"
        f'<html lang="{html.escape(lang)}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        + ("" if robots else '<meta name="robots" content="noindex, nofollow">\n')
        + f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
    headers = [] if robots else [("X-Robots-Tag", "noindex, nofollow")]
    return Response(status, text.encode("utf-8"), cache=cache, headers=headers)


def error_page(status: int, message: str) -> Response:
    phrase = HTTPStatus(status).phrase
    return page(status, phrase, f"<h1>{html.escape(phrase)}</h1>\n<p>{html.escape(message)}</p>")


def text_response(status: int, text: str) -> Response:
    return Response(status, text.encode("utf-8"), content_type="text/plain; charset=utf-8")


def mask_email(address: str) -> str:
    """reader@example.com -> re***@example.com: enough to recognise, not to harvest."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "***"
    shown = local[:2] if len(local) >= 4 else local[:1]
    return f"{shown}***@{domain}"
