"""Issue -> Email: Jinja2 -> MJML -> HTML -> inlined CSS, plus the plaintext twin, once."""

from __future__ import annotations

import html as html_mod
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import jinja2
from markupsafe import Markup

from .config import Settings
from .errors import TemplateError
from .issue import Issue, Notice
from .markdown import parser
from .text import references, render_text

HTML_TEMPLATE = "newsletter.mjml.j2"
TEXT_TEMPLATE = "newsletter.txt.j2"
# Installed, the top-level templates/ folder ships as mailer/templates; in a checkout it is beside.
_HERE = Path(__file__).resolve().parent
BUILTIN_TEMPLATES = next(
    (d for d in (_HERE / "templates", _HERE.parent / "templates") if (d / HTML_TEMPLATE).is_file()),
    _HERE / "templates",
)
GMAIL_CLIP_BYTES = 102 * 1024  # Gmail hides the rest of a message behind "View entire message"

# A per-person value is a slot in the rendered text: %%mailer:N%%. Only characters that survive
# MJML, lxml's attribute escaping and quoted-printable untouched.
SLOT_RE = re.compile(r"%%mailer:(\d+)%%")
_STYLESHEET_LINK = re.compile(r"<link\b[^>]*rel=[\"']?stylesheet[^>]*>", re.I)
_IMPORT = re.compile(r"@import\s+url\([^)]*\)\s*;?", re.I)
_SLOT_LIKE = re.compile(r"%%mailer:[^%\s]*%%", re.I)
_UNFILLED = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_CODE = re.compile(r"<(pre|code)\b.*?</\1>", re.S | re.I)

# The issue's own text must never reach a slot: "%%mailer:0%%" written in an issue would give
# each reader their own unsubscribe link, "%%mailer:99%%" would crash. Before rendering, a '%'
# that would start one ("%%mailer:") becomes LITERAL_PERCENT (a private-use character, which
# no text means); once a part is cut at its real slots, unescape() turns it back into '%', so
# the reader sees exactly what was written.
LITERAL_PERCENT = "\ue025"
_SLOT_START = re.compile(r"%(?=%mailer:)", re.I)
_ESCAPED = re.compile(
    # lxml writes a non-ASCII character in href and src as its UTF-8, percent-encoded
    f"(?:{LITERAL_PERCENT}|%EE%80%A5)(?=%mailer:)",
    re.I,
)


def neutralise(text: str) -> str:
    """Issue text with no slot in it: the first '%' of every "%%mailer:" escaped."""
    return _SLOT_START.sub(LITERAL_PERCENT, text) if "%" in text else text


def unescape(piece: str) -> str:
    """A literal piece of a rendered part (between slots) as the reader gets it."""
    return _ESCAPED.sub("%", piece) if LITERAL_PERCENT in piece else piece


def _neutralise_value(value: Any) -> Any:
    """Front matter as the templates see it: every string in it neutralised."""
    if isinstance(value, str):
        return neutralise(value)
    if isinstance(value, Mapping):
        return {k: _neutralise_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_neutralise_value(v) for v in value)
    return value


def fill_slots(content: str, values: list[str], *, escape: bool) -> str:
    """Put each slot's value in place (HTML-escaped for the HTML part); not the send hot path."""
    pieces = SLOT_RE.split(content)
    out = [unescape(pieces[0])]
    for index, literal in zip(pieces[1::2], pieces[2::2], strict=True):
        text = values[int(index)]
        out += (html_mod.escape(text, quote=True) if escape else text, unescape(literal))
    return "".join(out)


@dataclass(frozen=True)
class Slot:
    """One per-person value: a subscriber field (or 'unsubscribe_url') and what to show if empty."""

    field: str
    fallback: str = ""


@dataclass(frozen=True)
class Email:
    """An issue rendered once: HTML and text with slots where each reader's values go."""

    issue: Issue
    subject: str
    preheader: str
    html: str
    text: str
    slots: tuple[Slot, ...]
    notices: tuple[Notice, ...]
    words: int
    links: int
    images: int

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode("utf-8"))

    def fields(self) -> set[str]:
        """The subscriber fields the templates actually use."""
        used = {int(i) for i in SLOT_RE.findall(self.html)} | {
            int(i) for i in SLOT_RE.findall(self.text)
        }
        return {self.slots[i].field for i in used}

    def has_unsubscribe_link(self) -> bool:
        """Both parts carry the reader's unsubscribe link."""
        index = [i for i, s in enumerate(self.slots) if s.field == "unsubscribe_url"]
        return any(f"%%mailer:{i}%%" in self.html for i in index) and any(
            f"%%mailer:{i}%%" in self.text for i in index
        )

    def unfilled(self) -> list[str]:
        """Template syntax left in the rendered text (outside code samples): a sign of a mistake.

        A slot changed by a Jinja filter (`subscriber.name | upper`) no longer matches the slot
        pattern and would reach every reader as it is: it counts too.
        """
        found = _UNFILLED.findall(_CODE.sub("", self.html)) + _UNFILLED.findall(self.text)
        for text in (self.html, self.text):
            found += [
                f"{m.group(0)} (a filter changed a subscriber field)"
                for m in _SLOT_LIKE.finditer(text)
                if not SLOT_RE.fullmatch(m.group(0))
            ]
        return sorted(set(found))


class _SlotText(str):
    """The text of a slot, remembering which field it stands for (for the `fallback` filter)."""

    field: str


class _Slots:
    """Hands out slot markers while the templates render."""

    def __init__(self, settings: Settings) -> None:
        self.slots: list[Slot] = []
        self.name_fallback = settings.name_fallback

    def __call__(self, field: str, fallback: str | None = None) -> _SlotText:
        if fallback is None:
            fallback = self.name_fallback if field in ("name", "first_name") else ""
        slot = Slot(field, fallback)
        if slot not in self.slots:
            self.slots.append(slot)
        marker = _SlotText(f"%%mailer:{self.slots.index(slot)}%%")
        marker.field = field
        return marker


class _Subscriber:
    """`subscriber.<column>` in a template: a slot filled per reader at send time."""

    def __init__(self, slots: _Slots) -> None:
        self._slots = slots

    def __getattr__(self, field: str) -> _SlotText:
        if field.startswith("_"):
            raise AttributeError(field)
        return self._slots(field)

    __getitem__ = __getattr__


def template_dirs(settings: Settings) -> list[Path]:
    """Where templates are looked up, first match wins: configured, project's, built-in."""
    dirs = []
    if settings.templates:
        configured = settings.root / settings.templates
        if not configured.is_dir():
            raise TemplateError(f"template folder {configured} does not exist")
        dirs.append(configured)
    project = settings.root / "templates"
    if project.is_dir():
        dirs.append(project)
    dirs.append(BUILTIN_TEMPLATES)
    # In a checkout the project's templates/ is the built-in folder: search it once.
    return list(dict.fromkeys(d.resolve() for d in dirs))


def environment(settings: Settings) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in template_dirs(settings)]),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("mjml.j2", "html.j2", "html")),
        keep_trailing_newline=True,
        auto_reload=False,
    )
    return env


def render(issue: Issue, settings: Settings) -> Email:
    """Render an issue into an Email (both parts), checking what can be checked."""
    env = environment(settings)
    slots = _Slots(settings)
    env.filters["fallback"] = lambda value, default: (
        slots(value.field, default) if isinstance(value, _SlotText) else value or default
    )
    body_html = neutralise(_html_body(issue))
    body_text, urls = render_text(issue.tokens)
    body_text, urls = neutralise(body_text), [neutralise(u) for u in urls]
    shown = _neutralised(issue)  # what the templates see of the issue
    context: dict[str, Any] = {
        "issue": shown,
        "meta": shown.meta,
        "subscriber": _Subscriber(slots),
        "unsubscribe_url": slots("unsubscribe_url"),
        "archive_url": f"{settings.archive_url.rstrip('/')}/{issue.slug}"
        if settings.archive_url
        else "",
        "newsletter": {
            "name": settings.list_name,
            "postal_address": settings.postal_address,
            "list_id": settings.list_id,
        },
    }
    mjml_source = _render_template(env, HTML_TEMPLATE, {**context, "content": Markup(body_html)})
    text = _render_template(
        env, TEXT_TEMPLATE, {**context, "content": body_text, "references": references(urls)}
    )
    compiled = compile_mjml(mjml_source)
    # mjml-python copies the title into an attribute without escaping it: a quote would end it.
    for written in (html_mod.escape(shown.subject, quote=False), shown.subject):
        compiled = compiled.replace(
            f'aria-label="{written}"', f'aria-label="{html_mod.escape(shown.subject)}"'
        )
    html = _ESCAPED.sub(LITERAL_PERCENT, inline_css(compiled))
    notices = list(issue.notices)
    if _STYLESHEET_LINK.search(html) or _IMPORT.search(html):
        html = _IMPORT.sub("", _STYLESHEET_LINK.sub("", html))
        notices.append(Notice("stylesheet", "removed a remote stylesheet link from the template"))
    email = Email(
        issue=issue,
        subject=issue.subject,
        preheader=issue.preheader,
        html=html,
        text=text,
        slots=tuple(slots.slots),
        notices=(),
        words=len(re.findall(r"\w+", body_text)),
        links=len(issue.links),
        images=len(issue.images),
    )
    if email.html_bytes > GMAIL_CLIP_BYTES:
        notices.append(
            Notice(
                "size",
                f"HTML is {email.html_bytes / 1024:.0f} KB: Gmail clips messages over 102 KB",
            )
        )
    if not email.has_unsubscribe_link():
        notices.append(Notice("unsubscribe", "the template has no {{ unsubscribe_url }} link"))
    return replace(email, notices=tuple(notices))


def _neutralised(issue: Issue) -> Issue:
    """The issue with slot syntax in its title, subject, preheader and front matter escaped."""
    meta = _neutralise_value(dict(issue.meta))
    return replace(
        issue,
        title=neutralise(issue.title),
        subject=neutralise(issue.subject),
        preheader=neutralise(issue.preheader),
        meta=MappingProxyType(meta),
    )


def _html_body(issue: Issue) -> str:
    md = parser()
    # The renderer protocol returns Any; the default renderer (RendererHTML) returns str.
    return cast(str, md.renderer.render(list(issue.tokens), md.options, {}))


def _render_template(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {name} uses an undefined variable: {exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"template syntax error: {exc.message}", path=exc.filename, line=exc.lineno
        ) from None
    except jinja2.TemplateNotFound as exc:
        # environment() always builds a FileSystemLoader: name the folders it searched.
        loader = env.loader
        where = loader.searchpath if isinstance(loader, jinja2.FileSystemLoader) else loader
        raise TemplateError(f"template {exc.name} not found in {where}") from None


def compile_mjml(source: str) -> str:
    """MJML -> HTML with mjml-python, its failures turned into clear errors."""
    from mjml import mjml_to_html

    if "<mjml" not in source:
        raise TemplateError(f"{HTML_TEMPLATE} must produce MJML: no <mjml> element found")
    try:
        result = mjml_to_html(source)
    except KeyError as exc:
        raise TemplateError(f"MJML: unknown tag or attribute {exc}") from None
    except (AssertionError, ValueError, AttributeError, TypeError) as exc:
        raise TemplateError(
            f"MJML could not compile the template: {exc or type(exc).__name__}"
        ) from None
    if result.errors:
        raise TemplateError("MJML: " + "; ".join(map(str, result.errors)))
    # mjml-python is untyped; its result's html is the compiled document as a str.
    return cast(str, result.html)


def inline_css(html: str) -> str:
    """Move CSS into style attributes with premailer, keeping media queries and !important."""
    import premailer

    # cssutils logs hundreds of warnings about vendor properties it does not know.
    logging.getLogger("CSSUTILS").setLevel(logging.CRITICAL)
    html = premailer.Premailer(
        html,
        allow_network=False,  # never fetch anything while building
        strip_important=False,  # MJML's mobile rules depend on !important
        # premailer would copy CSS width/height/bgcolor into attributes, overwriting the ones
        # MJML set for Outlook (img width="100%" instead of pixel widths).
        disable_basic_attributes=["width", "height", "bgcolor", "align", "valign"],
        cssutils_logging_level=logging.CRITICAL,
        disable_validation=True,
        remove_classes=False,
    ).transform()
    # lxml drops the doctype MJML wrote; without it some clients render in quirks mode.
    return html if html.lstrip()[:9].lower() == "<!doctype" else "<!doctype html>\n" + html
