"""The accessibility check.

<html lang>, one <h1>, no skipped heading level, alt text, vague link text, text contrast
(WCAG AA: 4.5:1, 3:1 for large text) from inline colours and backgrounds. The issue's own
notices about its language are passed through.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from mailer.compose.render import Email
from mailer.compose.slots import SLOT_RE
from mailer.lint.colours import BLACK, WHITE, Colour, contrast_ratio, hex_code, over, read_colour
from mailer.lint.css import declarations, norm_value
from mailer.lint.origins import Origins
from mailer.lint.report import Finding, Origin, Section, Severity

# Link text that says nothing out of context, by language (English is always checked).
VAGUE_LINK_TEXT = {
    "en": "here|click here|source|link|this|this link|read more|more|learn more",
    "pt": "aqui|clique aqui|fonte|link|isto|leia mais|mais|saiba mais",
    "es": "aquí|aqui|haga clic aquí|clic aquí|fuente|enlace|esto|leer más|más",
    "fr": "ici|cliquez ici|source|lien|ceci|lire la suite|en savoir plus|plus",
    "de": "hier|hier klicken|klicken sie hier|quelle|link|dies|mehr|weiterlesen|mehr lesen",
    "it": "qui|clicca qui|fonte|link|questo|leggi di più|di più|altro",
    "zh": "这里|这儿|点击这里|此处|链接|来源|更多|阅读更多",
    "ja": "こちら|ここ|リンク|詳細|もっと見る|続きを読む",
}
_PUNCTUATION = " \t\n.,:;!?…→»›<>()[]{}\"'“”‘’*_-–—"
_HIDING = (
    ("display", "none"),
    ("visibility", "hidden"),
    ("opacity", "0"),
    ("mso-hide", "all"),
    ("max-height", "0"),
)


def accessibility_findings(doc: Any, email: Email, origins: Origins) -> list[Finding]:
    findings: list[Finding] = []
    styles = _Styles()

    def add(severity: Severity, code: str, title: str, origin: Origin) -> None:
        findings.append(Finding(Section.ACCESSIBILITY, severity, code, title, origin))

    root = doc if doc.tag == "html" else next(doc.iter("html"), doc)
    if not (root.get("lang") or "").strip():
        add(
            Severity.ERROR,
            "lang",
            "<html> has no lang attribute: screen readers guess the language",
            origins.attribute(root, "lang", ""),
        )
    for notice in email.notices:
        if notice.code == "lang":
            add(Severity.WARNING, "lang", notice.message, origins.in_issue(notice.line))

    headings = [h for h in doc.iter("h1", "h2", "h3", "h4", "h5", "h6") if not styles.hidden(h)]
    ones = [h for h in headings if h.tag == "h1"]
    if not ones:
        where = origins.whole_template()
        add(Severity.WARNING, "h1", "no <h1>: the email should have one top heading", where)
    for extra in ones[1:]:
        add(
            Severity.WARNING,
            "h1",
            f"a second <h1> ({_text(extra)[:60]!r}): the email should have one",
            origins.element(extra),
        )
    previous = 0
    for heading in headings:
        level = int(heading.tag[1])
        if previous and level > previous + 1:
            add(
                Severity.WARNING,
                "heading-order",
                f"<h{level}> follows <h{previous}>: heading level {previous + 1} skipped "
                f"({_text(heading)[:60]!r})",
                origins.element(heading),
            )
        previous = level

    for img in doc.iter("img"):
        alt = img.get("alt")
        src = img.get("src", "")
        if alt is None:
            add(Severity.ERROR, "alt", f"image without alt text: {src}", origins.element(img))
        elif not alt.strip() and not _decorative(img):
            add(
                Severity.ERROR,
                "alt",
                f"image with empty alt text (say what it shows, or mark it "
                f'role="presentation"): {src}',
                origins.element(img),
            )

    vague = set(VAGUE_LINK_TEXT["en"].split("|"))
    vague |= set(VAGUE_LINK_TEXT.get(email.issue.lang.split("-")[0].lower(), "").split("|"))
    vague.discard("")
    for a in doc.iter("a"):
        if a.get("href") is None or styles.hidden(a):
            continue
        text = _link_text(a)
        href = a.get("href", "")
        if not text:
            add(
                Severity.ERROR,
                "link-text",
                f"link without text (nothing a screen reader can say): {href}",
                origins.link(a),
            )
        elif text.lower().strip(_PUNCTUATION) in vague:
            add(
                Severity.WARNING,
                "vague-link",
                f"link text {text.strip(_PUNCTUATION)!r} says nothing out of context: {href}",
                origins.link(a),
            )

    findings += _contrast(doc, origins, styles)
    return findings


def _decorative(img: Any) -> bool:
    """An image meant to be skipped: role=presentation, aria-hidden, or a spacer (1 px)."""
    if (img.get("role") or "").lower() in ("presentation", "none"):
        return True
    if (img.get("aria-hidden") or "").lower() == "true":
        return True
    sizes = [img.get("width") or "", img.get("height") or ""]
    return any(re.fullmatch(r"\s*[01](px)?\s*", s) for s in sizes if s)


def _text(el: Any) -> str:
    return re.sub(r"\s+", " ", el.text_content() or "").strip()


def _link_text(a: Any) -> str:
    """What a screen reader says for a link: its text, or its images' alt text."""
    text = _text(a)
    if not text:
        text = " ".join((img.get("alt") or "").strip() for img in a.iter("img")).strip()
    return text or (a.get("aria-label") or a.get("title") or "").strip()


class _Styles:
    """Inline style attributes, parsed once per element."""

    def __init__(self) -> None:
        self._cache: dict[Any, dict[str, str]] = {}
        self._hidden: dict[Any, bool] = {}

    def of(self, el: Any) -> dict[str, str]:
        if el not in self._cache:
            style = el.get("style") if isinstance(el.tag, str) else None
            self._cache[el] = _raw_decls(style) if style else {}
        return self._cache[el]

    def hidden(self, el: Any) -> bool:
        """Not shown: in <head>, or inside display:none, visibility:hidden, opacity:0 (...)."""
        if el in self._hidden:
            return self._hidden[el]
        parent = el.getparent()
        if (isinstance(el.tag, str) and el.tag.lower() == "head") or el.get("hidden") is not None:
            hidden = True
        else:
            style = self.of(el)
            hidden = any(
                norm_value(style[prop]) in (value, f"{value}px")
                for prop, value in _HIDING
                if prop in style
            )
        hidden = hidden or (parent is not None and self.hidden(parent))
        self._hidden[el] = hidden
        return hidden


def _raw_decls(style: str) -> dict[str, str]:
    return {name: value.strip() for name, value, _ in declarations(style)}


def _contrast(doc: Any, origins: Origins, styles: _Styles) -> list[Finding]:
    findings: list[Finding] = []
    for el in doc.iter():
        if not isinstance(el.tag, str) or el.tag.lower() in ("style", "script", "title", "head"):
            continue
        text = (el.text or "") + "".join(c.tail or "" for c in el)
        if not text.strip() or SLOT_RE.fullmatch(text.strip()) or styles.hidden(el):
            continue
        colour, carrier = _inherited(el, styles, _text_colour)
        background = _background(el, styles)
        fg = over(colour or BLACK, background)
        ratio = contrast_ratio(fg, background)
        large = _large_text(el, styles)
        needed = 3.0 if large else 4.5
        if ratio + 1e-9 >= needed:
            continue
        if carrier is not None:
            origin = origins.inline(carrier, "color", styles.of(carrier).get("color", ""))
        else:
            origin = origins.element(el)
        size = "large text" if large else "text"
        findings.append(
            Finding(
                Section.ACCESSIBILITY,
                Severity.ERROR,
                "contrast",
                f"{size} colour {hex_code(fg)} on {hex_code(background)}: contrast {ratio:.2f}:1, "
                f"WCAG AA needs {needed:g}:1",
                origin,
            )
        )
    return findings


def _text_colour(el: Any, styles: _Styles) -> Colour | None:
    colour = styles.of(el).get("color")
    if colour is None and el.tag.lower() == "font":
        colour = el.get("color")
    return read_colour(colour) if colour else None


def _inherited(
    el: Any, styles: _Styles, read: Callable[[Any, _Styles], Colour | None]
) -> tuple[Colour | None, Any]:
    for node in [el, *el.iterancestors()]:
        found = read(node, styles)
        if found is not None:
            return found, node
    return None, None


def _background(el: Any, styles: _Styles) -> Colour:
    """The colour behind an element: the nearest background, blended down to white."""
    layers: list[Colour] = []
    for node in [el, *el.iterancestors()]:
        style = styles.of(node)
        value = style.get("background-color") or style.get("background") or node.get("bgcolor")
        found = read_colour(value) if value else None
        if found is not None and found[3] > 0:
            layers.append(found)
            if found[3] >= 1:
                break
    result = WHITE
    for layer in reversed(layers):
        result = over(layer, result)
    return result


def _large_text(el: Any, styles: _Styles) -> bool:
    """WCAG's large text: 24px, or 18.66px and bold (sizes from inline styles)."""
    size: float | None = None
    weight: str | None = None
    for node in [el, *el.iterancestors()]:
        style = styles.of(node)
        if size is None and "font-size" in style:
            match = re.match(r"\s*([\d.]+)\s*(px|pt)?", style["font-size"])
            if match:
                size = float(match.group(1)) * (4 / 3 if match.group(2) == "pt" else 1)
        if weight is None and "font-weight" in style:
            weight = style["font-weight"].strip().lower()
        if weight is None and node.tag in ("h1", "h2", "h3", "h4", "h5", "h6", "strong", "b"):
            weight = "bold"
    bold = weight in ("bold", "bolder") or (weight or "").isdigit() and int(weight or 0) >= 700
    return size is not None and (size >= 24 or (bold and size >= 18.66))
