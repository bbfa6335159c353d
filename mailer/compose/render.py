"""Issue -> Email: Jinja2 -> MJML -> HTML -> inlined CSS, plus the plaintext twin, once."""

from __future__ import annotations

import copy
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, cast

import jinja2
from markdown_it.renderer import RendererHTML
from markupsafe import Markup

from mailer.compose import images as images_mod
from mailer.compose.brand import brand
from mailer.compose.fields import Placeholders
from mailer.compose.highlight import CodeBlocks
from mailer.compose.htmlfix import (
    image_rules,
    minify,
    outlook_fixes,
    quote_title,
    without_remote_styles,
)
from mailer.compose.issue import Issue, Notice
from mailer.compose.markdown import parser
from mailer.compose.slots import (
    SLOT_RE,
    Slot,
    Slots,
    Subscriber,
    altered,
    escape_again,
    marker,
    neutralise,
    neutralised,
)
from mailer.compose.text import render_plain, underlined
from mailer.config import Settings
from mailer.errors import TemplateError

HTML_TEMPLATE = "newsletter.mjml.j2"
TEXT_TEMPLATE = "newsletter.txt.j2"
BUILTIN_TEMPLATES = Path(__file__).resolve().parent / "templates"
GMAIL_CLIP_BYTES = 102 * 1024  # Gmail hides the rest of a message behind "View entire message"

# After the preheader in the hidden preview div: invisible characters (combining grapheme
# joiner, zero-width non-joiner, no-break space), so the inbox preview ends with the preheader
# instead of running on into "View this email in your browser".
PREHEADER_FILLER = "&#847;&zwnj;&nbsp;" * 100

# Font stacks by language. Latin, Cyrillic and Greek: the system UI fonts, and no CJK font
# (one before the generic family would draw Latin punctuation and digits in a CJK design).
# Other scripts: the same Latin fonts first (for the Latin words in the text), then the
# script's own fonts on Apple, Windows and Android/Linux, then the generic family.
LATIN_FONTS = "-apple-system, 'Segoe UI', Roboto, Helvetica, Arial"
SCRIPT_FONTS = {
    "zh-hans": "'PingFang SC', 'Hiragino Sans GB', 'Microsoft YaHei', 'Noto Sans CJK SC'",
    "zh-hant": "'PingFang TC', 'Microsoft JhengHei', 'Noto Sans CJK TC'",
    "ja": "'Hiragino Sans', 'Hiragino Kaku Gothic ProN', 'Yu Gothic', Meiryo, 'Noto Sans CJK JP'",
    "ko": "'Apple SD Gothic Neo', 'Malgun Gothic', 'Noto Sans CJK KR'",
    "ar": "'Geeza Pro', Tahoma, 'Noto Sans Arabic'",
    "he": "'Arial Hebrew', 'Noto Sans Hebrew'",
    "hi": "'Kohinoor Devanagari', 'Nirmala UI', Mangal, 'Noto Sans Devanagari'",
}
# mjml-python links Google Fonts' Roboto into any email whose font-family names it (and has no
# way to turn that off): the template sees this stand-in, put back once MJML is done.
_ROBOTO_STAND_IN = "mailer-system-font-1"
_SAME_SCRIPT = {"iw": "he", "fa": "ar", "ur": "ar", "ps": "ar", "mr": "hi", "ne": "hi"}
_TRADITIONAL = ("hant", "tw", "hk", "mo")


def font_stack(lang: str) -> str:
    """The CSS font-family for an issue's language tag (en, pt-BR, zh-TW, zh-Hans, ja...)."""
    parts = lang.lower().replace("_", "-").split("-")
    base = _SAME_SCRIPT.get(parts[0], parts[0])
    if base == "zh":
        # zh-Hant, zh-TW, zh-HK, zh-MO: traditional characters; zh, zh-CN, zh-Hans: simplified
        traditional = "hans" not in parts and bool(set(parts[1:]) & set(_TRADITIONAL))
        base = "zh-hant" if traditional else "zh-hans"
    script = SCRIPT_FONTS.get(base)
    return f"{LATIN_FONTS}, {script}, sans-serif" if script else f"{LATIN_FONTS}, sans-serif"


_UNFILLED = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_CODE = re.compile(r"<(pre|code)\b.*?</\1>", re.S | re.I)


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
        return any(marker(i) in self.html for i in index) and any(
            marker(i) in self.text for i in index
        )

    def unfilled(self) -> list[str]:
        """Template syntax left in the rendered text (outside code samples): a sign of a mistake.

        A slot changed by a Jinja filter (`subscriber.name | upper`) no longer matches the slot
        pattern and would reach every reader as it is: it counts too.
        """
        found = _UNFILLED.findall(_CODE.sub("", self.html)) + _UNFILLED.findall(self.text)
        for text in (self.html, self.text):
            found += [f"{slot} (a filter changed a subscriber field)" for slot in altered(text)]
        return sorted(set(found))


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
    return list(dict.fromkeys(d.resolve() for d in dirs))


@dataclass(frozen=True)
class ComposeOptions:
    """What rendering takes from the settings, read once per render."""

    templates: tuple[Path, ...]  # where templates are looked up, first match wins
    image_sizes: Path  # the cache of images' real sizes (images.json)
    name_fallback: str  # `subscriber.name` for a reader with no name
    archive_url: str
    list_name: str
    list_id: str
    postal_address: str
    logo: str = ""
    accent_color: str = ""
    subscribe_url: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> ComposeOptions:
        return cls(
            templates=tuple(template_dirs(settings)),
            image_sizes=images_mod.cache_file(settings),
            name_fallback=settings.name_fallback,
            archive_url=settings.archive_url,
            list_name=settings.list_name,
            list_id=settings.list_id,
            postal_address=settings.postal_address,
            logo=settings.logo,
            accent_color=settings.accent_color,
            subscribe_url=settings.subscribe_url,
        )


def environment(templates: Sequence[Path]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in templates]),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("mjml.j2", "html.j2", "html")),
        keep_trailing_newline=True,
        auto_reload=False,
    )
    return env


def render(issue: Issue, settings: Settings) -> Email:
    """Render an issue into an Email (both parts), checking what can be checked."""
    return render_with(issue, ComposeOptions.from_settings(settings))


def render_with(issue: Issue, options: ComposeOptions) -> Email:
    """render(), given only what it takes from the settings."""
    env = environment(options.templates)
    slots = Slots(options.name_fallback)
    env.filters["underlined"] = underlined
    env.filters["fallback"] = slots.fallback
    # The issue's merge fields: placeholders while its text is rendered and neutralised, then
    # slots (neutralising would escape a slot written straight into the body).
    fields = Placeholders(slots)
    code = CodeBlocks()
    sizes = images_mod.load_sizes(options.image_sizes)
    body_html = fields.fill(neutralise(_html_body(issue, sizes, fields, code)))
    plain = render_plain(issue.tokens, field=fields)
    shown = neutralised(issue)  # what the templates see of the issue
    if issue.preheader_from_body:
        shown = replace(shown, preheader=fields.in_text(shown.preheader))
    context: dict[str, Any] = {
        "issue": shown,
        "meta": shown.meta,
        "subscriber": Subscriber(slots),
        "unsubscribe_url": slots("unsubscribe_url"),
        # The issue's page as `mailer publish` writes it (issues/NAME/index.html).
        "archive_url": f"{options.archive_url.rstrip('/')}/{issue.slug}/"
        if options.archive_url
        else "",
        "newsletter": {
            "name": options.list_name,
            "postal_address": options.postal_address,
            "list_id": options.list_id,
        },
        "brand": brand(
            issue,
            name=options.list_name,
            logo=options.logo,
            accent_color=options.accent_color,
            subscribe_url=options.subscribe_url,
        ),
        "font_stack": Markup(font_stack(issue.lang).replace("Roboto", _ROBOTO_STAND_IN)),
        "preheader_filler": Markup(PREHEADER_FILLER),
    }
    mjml_source = _render_template(env, HTML_TEMPLATE, {**context, "content": Markup(body_html)})
    text = _render_template(
        env,
        TEXT_TEMPLATE,
        {
            **context,
            "content": fields.fill(neutralise(plain.body)),
            "references": neutralise(plain.references),
        },
    )
    compiled = compile_mjml(mjml_source).replace(_ROBOTO_STAND_IN, "Roboto")
    compiled = code.put_back(compiled, neutralise)
    # mjml-python copies the title into an attribute without escaping it: a quote would end it.
    html = escape_again(inline_css(quote_title(compiled, shown.subject)))
    notices = list(issue.notices)
    html, removed = without_remote_styles(html)
    if removed:
        notices.append(Notice("stylesheet", "removed a remote stylesheet link from the template"))
    html = outlook_fixes(html)
    if len(html.encode("utf-8")) > GMAIL_CLIP_BYTES:
        html = minify(html)  # only when it matters: see minify()
    email = Email(
        issue=issue,
        subject=issue.subject,
        preheader=issue.preheader,
        html=html,
        text=text,
        slots=tuple(slots.slots),
        notices=(),
        words=len(re.findall(r"\w+", fields.words(plain.body))),
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


def _html_body(
    issue: Issue,
    sizes: Mapping[str, tuple[int, int]] | None = None,
    fields: Placeholders | None = None,
    code: CodeBlocks | None = None,
) -> str:
    md = parser()
    renderer = md.renderer
    if isinstance(renderer, RendererHTML):
        # A copy with image, code and field rules: the shared parser's renderer stays as it is.
        renderer = copy.copy(renderer)
        renderer.rules = {
            **renderer.rules,
            **image_rules(renderer, sizes or {}),
            **(code.rules(renderer) if code else {}),
            **(fields.rules() if fields else {}),
        }
    # The renderer protocol returns Any; the default renderer (RendererHTML) returns str.
    return cast(str, renderer.render(list(issue.tokens), md.options, {}))


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
    import cssutils  # type: ignore[import-untyped]
    import premailer

    # cssutils logs hundreds of warnings about vendor properties it does not know.
    logging.getLogger("CSSUTILS").setLevel(logging.CRITICAL)
    inliner = premailer.Premailer(
        html,
        allow_network=False,  # never fetch anything while building
        strip_important=False,  # MJML's mobile rules depend on !important
        # premailer would copy CSS width/height/bgcolor into attributes, overwriting the ones
        # MJML set for Outlook (img width="100%" instead of pixel widths).
        disable_basic_attributes=["width", "height", "bgcolor", "align", "valign"],
        cssutils_logging_level=logging.CRITICAL,
        disable_validation=True,
        remove_classes=False,
    )
    # disable_validation reaches premailer's <style> parsing only: every style attribute it
    # merges and every <img> it checks for a float is still parsed with validation on, and
    # validating a property first compiles that property's pattern from cssutils' profiles
    # (for issue-2, 19 patterns of 45,000 characters in all: 50-60 ms of a cold build), for
    # log lines this process silences. Validation changes nothing else: a declaration is kept
    # and written out the same either way (cssutils.ser.prefs.validOnly is False). cssutils
    # validates against the global cssutils.profile: for the transform, a Profiles with no
    # profile in it.
    with _NO_VALIDATION:  # the swap is process-wide: one transform at a time
        validating, cssutils.profile = cssutils.profile, _no_profiles()
        try:
            html = inliner.transform()
        finally:
            cssutils.profile = validating
    # lxml drops the doctype MJML wrote; without it some clients render in quirks mode.
    return html if html.lstrip()[:9].lower() == "<!doctype" else "<!doctype html>\n" + html


_NO_VALIDATION = threading.Lock()


@cache
def _no_profiles() -> Any:
    """A cssutils Profiles that knows no property: every value goes unchecked."""
    import cssutils
    from cssutils.profiles import Profiles  # type: ignore[import-untyped]

    class Empty(Profiles):  # type: ignore[misc]
        def addProfiles(self, profiles: Any) -> None:
            """Not the predefined profiles (expanding their macros costs ~3 ms)."""

    empty = Empty(log=cssutils.log)
    empty.removeProfile(all=True)  # empty whatever the constructor added
    return empty
