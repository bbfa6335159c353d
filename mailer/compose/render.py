"""Issue -> Email: Jinja2 -> MJML -> HTML -> inlined CSS, plus the plaintext twin, once."""

from __future__ import annotations

import copy
import html as html_mod
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import jinja2
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from markupsafe import Markup

from mailer.compose import images as images_mod
from mailer.compose.issue import Issue, Notice
from mailer.compose.markdown import parser
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
    env.filters["underlined"] = underlined
    env.filters["fallback"] = lambda value, default: (
        slots(value.field, default) if isinstance(value, _SlotText) else value or default
    )
    body_html = neutralise(_html_body(issue, images_mod.load_sizes(settings)))
    plain = render_plain(issue.tokens)
    shown = _neutralised(issue)  # what the templates see of the issue
    context: dict[str, Any] = {
        "issue": shown,
        "meta": shown.meta,
        "subscriber": _Subscriber(slots),
        "unsubscribe_url": slots("unsubscribe_url"),
        # The issue's page as `mailer publish` writes it (issues/NAME/index.html).
        "archive_url": f"{settings.archive_url.rstrip('/')}/{issue.slug}/"
        if settings.archive_url
        else "",
        "newsletter": {
            "name": settings.list_name,
            "postal_address": settings.postal_address,
            "list_id": settings.list_id,
        },
        "font_stack": Markup(font_stack(issue.lang).replace("Roboto", _ROBOTO_STAND_IN)),
        "preheader_filler": Markup(PREHEADER_FILLER),
    }
    mjml_source = _render_template(env, HTML_TEMPLATE, {**context, "content": Markup(body_html)})
    text = _render_template(
        env,
        TEXT_TEMPLATE,
        {
            **context,
            "content": neutralise(plain.body),
            "references": neutralise(plain.references),
        },
    )
    compiled = compile_mjml(mjml_source).replace(_ROBOTO_STAND_IN, "Roboto")
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
        words=len(re.findall(r"\w+", plain.body)),
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


def _html_body(issue: Issue, sizes: Mapping[str, tuple[int, int]] | None = None) -> str:
    md = parser()
    renderer = md.renderer
    if isinstance(renderer, RendererHTML):
        # A copy with image rules added: the shared parser's renderer stays as it is.
        renderer = copy.copy(renderer)
        renderer.rules = {**renderer.rules, **_image_rules(renderer, sizes or {})}
    # The renderer protocol returns Any; the default renderer (RendererHTML) returns str.
    return cast(str, renderer.render(list(issue.tokens), md.options, {}))


# -- content images: a pixel width for Outlook ------------------------------------------------

_IMG_TAG = re.compile(r"<img\b[^>]*>", re.I)
_TAG_ATTR = re.compile(r"""([^\s"'<>/=]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"'<>`]+))?""")
_BOX_PROPS = frozenset({"width", "max-width", "min-width", "height", "max-height"})


def image_style(width: int, author_style: str = "") -> str:
    """An image's inline style as mj-image writes it, plus the cap the width attribute gives.

    width:100% fills narrow screens, max-width keeps it to its own size elsewhere; any width or
    height the author's style set gives way (the width attribute now carries it).
    """
    kept = [
        decl.strip()
        for decl in author_style.split(";")
        if decl.strip() and decl.split(":", 1)[0].strip().lower() not in _BOX_PROPS
    ]
    return ";".join([f"width:100%;max-width:{width}px;height:auto", *kept])


def _style_length(style: str, prop: str) -> str | None:
    """A pixel width or height set in an author's style attribute ("width: 300px"), if any."""
    match = re.search(rf"(?:^|;)\s*{prop}\s*:\s*(\d+(?:\.\d+)?)px", style, re.I)
    return match.group(1) if match else None


def _sized_attrs(
    attrs: Mapping[str, str], sizes: Mapping[str, tuple[int, int]], src: str
) -> dict[str, str]:
    """width, height and style for one image (the rest of its attributes unchanged)."""
    style = attrs.get("style", "")
    width, height = images_mod.fit(
        attrs.get("width") or _style_length(style, "width"),
        attrs.get("height") or _style_length(style, "height"),
        sizes.get(src),
    )
    out = dict(attrs)
    out["width"] = str(width)
    out.pop("height", None)
    if height is not None:
        out["height"] = str(height)
    out["style"] = image_style(width, style)
    return out


def _sized_tag(tag: str, sizes: Mapping[str, tuple[int, int]]) -> str:
    """A raw <img> tag from the issue's HTML with its width, height and style settled."""
    closing = "/>" if tag.endswith("/>") else ">"
    inner = tag[4 : -len(closing)]
    attrs: dict[str, str] = {}
    for name, raw in _TAG_ATTR.findall(inner):
        value = raw[1:-1] if raw[:1] in ("'", '"') else raw
        attrs.setdefault(name.lower(), html_mod.unescape(value))
    sized = _sized_attrs(attrs, sizes, attrs.get("src", ""))
    written = "".join(f' {k}="{html_mod.escape(v, quote=True)}"' for k, v in sized.items())
    return f"<img{written}{' /' if closing == '/>' else ''}>"


def size_raw_images(content: str, sizes: Mapping[str, tuple[int, int]]) -> str:
    """Every <img> tag in a piece of raw HTML, sized (see _sized_attrs)."""
    if "<img" not in content.lower():
        return content
    return _IMG_TAG.sub(lambda m: _sized_tag(m.group(0), sizes), content)


def _image_rules(renderer: RendererHTML, sizes: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
    """Renderer rules giving every content image a pixel width (Markdown images and raw <img>)."""

    def image(tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        token = tokens[idx]
        attrs = {k: str(v) for k, v in token.attrs.items()}
        # like RendererHTML.image: alt is always there, as the image's text
        attrs["alt"] = renderer.renderInlineAsText(token.children or [], options, env)
        sized = token.copy(attrs=_sized_attrs(attrs, sizes, attrs.get("src", "")))
        return renderer.renderToken([sized], 0, options, env)

    def sized_html(original: Any) -> Any:
        """The parser's own rule for raw HTML, its output's <img> tags sized."""

        def rule(tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
            out = original(tokens, idx, options, env) if original else tokens[idx].content
            return size_raw_images(str(out), sizes)

        return rule

    return {
        "image": image,
        "html_block": sized_html(renderer.rules.get("html_block")),
        "html_inline": sized_html(renderer.rules.get("html_inline")),
    }


# -- the compiled HTML: what MJML cannot say ---------------------------------------------------

# A start tag (in the serialised HTML a '<' in text is always &lt;, and lxml escapes '<' and
# '>' in attribute values), and a style attribute in it, quoted either way.
_START_TAG = re.compile(r"<[a-zA-Z][^<>]*>")
_STYLE_ATTR = re.compile(r"""(\sstyle=)(?:"([^"]*)"|'([^']*)')""", re.I)
_LINE_HEIGHT = re.compile(r"(^|;)(\s*)line-height\s*:", re.I)
_PREVIEW_DIV = '<div style="display:none;font-size:1px;'


def outlook_fixes(html: str) -> str:
    """Outlook desktop's needs, on the inlined HTML.

    - `mso-line-height-rule:exactly` before every line-height, or Word treats a pixel
      line-height as a minimum and spreads lines apart;
    - `mso-hide:all` on the hidden preheader (Word shows display:none text in some versions).
    """

    def style_attr(match: re.Match[str]) -> str:
        double = match.group(2) is not None
        style = match.group(2) if double else match.group(3)
        if "line-height" not in style or "mso-line-height-rule" in style:
            return match.group(0)
        style = _LINE_HEIGHT.sub(r"\1\2mso-line-height-rule:exactly;line-height:", style, count=1)
        quote = '"' if double else "'"
        return f"{match.group(1)}{quote}{style}{quote}"

    def tag(match: re.Match[str]) -> str:
        text = match.group(0)
        return _STYLE_ATTR.sub(style_attr, text) if "line-height" in text else text

    html = _START_TAG.sub(tag, html)
    return html.replace(_PREVIEW_DIV, _PREVIEW_DIV + "mso-hide:all;", 1)


# A slot inside minify_html's output must stay a slot, and stay quoted inside an attribute
# (minify_html unquotes href=%%mailer:0%%; a value with a space, filled in later, would then
# end the attribute). While minifying, each slot is written with '=' in it, which an unquoted
# attribute value may not hold, so the attribute keeps its quotes.
_GUARD = "\ue026"
_GUARDED = re.compile(f"{_GUARD}=(\\d+)={_GUARD}")


def minify(html: str) -> str:
    """The HTML minified by minify_html, MSO conditional comments and slots kept byte-exact.

    Used only when the HTML is over Gmail's clip: minifying costs under 2 ms but saves only
    ~5% of a typical issue (text dominates), and an unminified email stays readable to anyone
    debugging a client. CSS is left as written (mso-* properties must survive).
    """
    import minify_html

    if _GUARD in html:  # the guard character in the issue itself: leave the HTML as it is
        return html
    guarded = SLOT_RE.sub(lambda m: f"{_GUARD}={m.group(1)}={_GUARD}", html)
    out = minify_html.minify(
        guarded,
        keep_comments=True,  # <!--[if mso]> ... <![endif]-->: Outlook's tables live there
        keep_closing_tags=True,
        keep_html_and_head_opening_tags=True,
    )
    return _GUARDED.sub(lambda m: f"%%mailer:{m.group(1)}%%", str(out))


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
