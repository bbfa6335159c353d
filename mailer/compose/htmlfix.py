"""What the email's HTML needs that Markdown and MJML do not give it, for the mail clients.

Content images get a pixel width (Outlook desktop ignores CSS max-width); the compiled HTML gets
Outlook's line-height rule and a hidden preheader it really hides, a title attribute that stays
quoted, no remote stylesheet, and minifying when it is over Gmail's clip.
"""

from __future__ import annotations

import html as html_mod
import re
from collections.abc import Mapping, Sequence
from typing import Any

from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

from mailer.compose import images as images_mod
from mailer.compose.slots import SLOT_RE

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


def image_rules(renderer: RendererHTML, sizes: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
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

_STYLESHEET_LINK = re.compile(r"<link\b[^>]*rel=[\"']?stylesheet[^>]*>", re.I)
_IMPORT = re.compile(r"@import\s+url\([^)]*\)\s*;?", re.I)


def quote_title(html: str, title: str) -> str:
    """The aria-label MJML copied the title into, escaped (mjml-python does not escape it)."""
    for written in (html_mod.escape(title, quote=False), title):
        html = html.replace(f'aria-label="{written}"', f'aria-label="{html_mod.escape(title)}"')
    return html


def without_remote_styles(html: str) -> tuple[str, bool]:
    """The HTML with no stylesheet link or @import, and whether there was one to remove."""
    if _STYLESHEET_LINK.search(html) or _IMPORT.search(html):
        return _IMPORT.sub("", _STYLESHEET_LINK.sub("", html)), True
    return html, False


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
