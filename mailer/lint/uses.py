"""What the built HTML and its CSS use, as caniemail feature slugs, place by place."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import tinycss2  # type: ignore[import-untyped]
from lxml import etree  # type: ignore[import-untyped]

from mailer.lint.css import declarations, norm_value
from mailer.lint.features import Matchers

# File extensions and data: URI types -> image format features.
_IMAGE_FORMATS = {
    **dict.fromkeys(["apng"], "image-apng"),
    **dict.fromkeys(["avif"], "image-avif"),
    **dict.fromkeys(["bmp"], "image-bmp"),
    **dict.fromkeys(["gif"], "image-gif"),
    **dict.fromkeys(["heic", "heif"], "image-heif"),
    **dict.fromkeys(["ico", "vnd.microsoft.icon"], "image-ico"),
    **dict.fromkeys(["jpeg", "jpg"], "image-jpg"),
    **dict.fromkeys(["png"], "image-png"),
    **dict.fromkeys(["svg", "svg+xml"], "image-svg"),
    **dict.fromkeys(["tif", "tiff"], "image-tiff"),
    **dict.fromkeys(["webp"], "image-webp"),
    **dict.fromkeys(["mp4"], "image-mp4"),
}


def property_slugs(m: Matchers, prop: str, value: str, important: bool) -> list[str]:
    """Every feature a declaration uses: its property, value, functions, units, keywords."""
    slugs = list(m.properties.get(prop, ()))
    slugs += [slug for pattern, slug in m.longhands if pattern.fullmatch(prop)]
    if prop.startswith("--"):
        slugs += m.functions.get("var", [])
    plain = norm_value(value)
    slugs += m.pairs.get((prop, plain), [])
    bare = _STRINGS.sub("", _URL.sub("url()", plain))
    for name in dict.fromkeys(re.findall(r"([a-z-]+)\(", bare)):
        slugs += m.functions.get(name, [])
    no_hex = re.sub(r"#[0-9a-f]+", "", bare)
    slugs += [slug for pattern, slug in m.units if pattern.search(no_hex)]
    slugs += [slug for pattern, slug in m.values if pattern.search(bare)]
    if important and "!important" in m.keywords:
        slugs.append(m.keywords["!important"])
    for url in _urls(value):
        slugs += _image_slugs(url)
    return slugs


def _image_slugs(url: str) -> list[str]:
    url = url.strip()
    data = re.match(r"data:image/([\w.+-]+)", url, re.I)
    if data:
        fmt = data.group(1).lower()
        return ["image-base64", *([_IMAGE_FORMATS[fmt]] if fmt in _IMAGE_FORMATS else [])]
    ext = re.search(r"\.([a-z0-9]+)$", re.split(r"[?#]", url, maxsplit=1)[0], re.I)
    slug = _IMAGE_FORMATS.get(ext.group(1).lower()) if ext else None
    return [slug] if slug else []


_URL = re.compile(r"url\(\s*(['\"]?)(.*?)\1\s*\)", re.I)
_STRINGS = re.compile(r"\"[^\"]*\"|'[^']*'")


def _urls(value: str) -> list[str]:
    return [m.group(2) for m in _URL.finditer(value) if m.group(2).strip()]


# A selector, token by token: combinators, #id, .class, [attr], pseudo, *, type, &.
_SELECTOR_TOKEN = re.compile(
    r"\s*([>+~])\s*|(\s+)|(#[\w-]+)|(\.[\w-]+)|(\[[^\]]*\])|(::?[\w-]+(?:\([^)]*\))?)|(\*)|([\w-]+)|(&)"
)


def selector_slugs(m: Matchers, selector: str) -> list[str]:
    parts = _split_top(selector, ",")
    kinds: set[str] = {"Grouping selectors"} if len(parts) > 1 else set()
    slugs: list[str] = []
    for part in parts:
        classes_here = 0
        for token in _SELECTOR_TOKEN.finditer(part.strip()):
            combinator, space, hash_, cls, attr, pseudo, star, tag, amp = token.groups()
            if combinator or space:
                classes_here = 0
                kinds.add(_COMBINATORS[combinator] if combinator else "Descendant combinator")
            elif hash_:
                kinds.add("ID selector")
            elif cls:
                kinds.add("Class selector")
                classes_here += 1
                if classes_here >= 2:
                    kinds.add("Chaining selectors")
            elif attr:
                name = re.match(r"\[\s*([^\s~|^$*=\]]+)", attr)
                attr_name = name.group(1).lower() if name else ""
                kinds.add(_ATTRIBUTE_KINDS.get(attr_name, "Attribute selector"))
            elif pseudo:
                slugs += [slug for pattern, slug in m.pseudo if pattern.match(pseudo)]
            elif star:
                kinds.add("Universal selector *")
            elif tag:
                kinds.add("Type selector")
            elif amp and "nesting" in m.special:
                slugs.append(m.special["nesting"])
    return slugs + [m.selectors[k] for k in sorted(kinds) if k in m.selectors]


_ATTRIBUTE_KINDS = {"class": "Class selector", "id": "ID selector"}  # [class~=x] is a class
_COMBINATORS = {
    ">": "Child combinator",
    "+": "Adjacent sibling combinator",
    "~": "General sibling combinator",
}


def _split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` outside brackets and parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def media_slugs(m: Matchers, prelude: str) -> list[str]:
    slugs: list[str] = []
    for name in re.findall(r"\(\s*([-a-z]+)", prelude.lower()):
        base = re.sub(r"^(-[a-z]+-)?(min-|max-)", r"\1", name)
        if base == "device-pixel-ratio":
            base = "-webkit-device-pixel-ratio"
        slugs += m.media.get(base, [])
    return slugs


UseKind = Literal["decl", "rule", "atrule", "element", "attribute", "doctype", "comment"]


@dataclass(frozen=True, eq=False)
class Use:
    """One place in the built HTML that uses a feature."""

    slug: str
    kind: UseKind
    element: Any  # the lxml element (for a stylesheet: its <style>)
    name: str = ""  # property, attribute or at-rule name
    value: str = ""
    selector: str = ""  # the rule's selector, for a stylesheet's declarations


_KEEP_COMMENTS = {"skip_comments": False, "skip_whitespace": True}
_GROUPING_AT_RULES = frozenset({"media", "supports", "document", "layer", "container"})


def find_uses(html: str, doc: Any, m: Matchers) -> Iterator[Use]:
    """Every use of a caniemail feature in the built email, in document order."""
    if "doctype" in m.special and re.match(r"\s*<!doctype html\s*>", html, re.I):
        yield Use(m.special["doctype"], "doctype", doc)
    for el in doc.iter():
        if not isinstance(el.tag, str):
            if el.tag is etree.Comment and "html-comment" in m.special:
                yield Use(m.special["html-comment"], "comment", el)
            continue
        tag = el.tag.lower()
        for slug in m.elements.get(tag, ()):
            yield Use(slug, "element", el)
        for name, value in el.attrib.items():
            name = name.lower()
            for slug in m.attributes.get(name, ()):
                yield Use(slug, "attribute", el, name, value)
            for pair in m.element_pairs:
                if (
                    pair.tag == tag
                    and pair.attr == name
                    and (pair.test is None or pair.test(value))
                ):
                    yield Use(pair.slug, "attribute", el, name, value)
        images = [el.get("src", "")] if tag == "img" else []
        images += [c.strip().split(" ")[0] for c in el.get("srcset", "").split(",") if c.strip()]
        for url in images:
            for slug in _image_slugs(url):
                yield Use(slug, "attribute", el, "src", url)
        style = el.get("style")
        if style:
            for name, raw, important in declarations(style):
                value = raw.strip()
                for slug in property_slugs(m, name, value, important):
                    yield Use(slug, "decl", el, name, value)
        if tag == "style" and el.text:
            yield from _stylesheet_uses(el, el.text, m)


def _stylesheet_uses(el: Any, css: str, m: Matchers) -> Iterator[Use]:
    yield from _rule_uses(el, tinycss2.parse_stylesheet(css, **_KEEP_COMMENTS), m)


def _rule_uses(el: Any, rules: Iterable[Any], m: Matchers) -> Iterator[Use]:
    for rule in rules:
        if rule.type == "comment" and "css-comment" in m.special:
            yield Use(m.special["css-comment"], "comment", el)
        elif rule.type == "at-rule":
            name, prelude = rule.lower_at_keyword, tinycss2.serialize(rule.prelude).strip()
            media = media_slugs(m, prelude) if name == "media" else []
            for slug in m.at_rules.get(name, []) + media:
                yield Use(slug, "atrule", el, name, prelude)
            if rule.content is not None and name in _GROUPING_AT_RULES:
                yield from _rule_uses(
                    el, tinycss2.parse_rule_list(rule.content, **_KEEP_COMMENTS), m
                )
        elif rule.type == "qualified-rule":
            selector = tinycss2.serialize(rule.prelude).strip()
            for slug in selector_slugs(m, selector):
                yield Use(slug, "rule", el, selector=selector)
            for decl in tinycss2.parse_blocks_contents(rule.content, **_KEEP_COMMENTS):
                if decl.type == "declaration":
                    value = tinycss2.serialize(decl.value).strip()
                    for slug in property_slugs(m, decl.lower_name, value, decl.important):
                        yield Use(slug, "decl", el, decl.lower_name, value, selector)
                elif decl.type == "comment" and "css-comment" in m.special:
                    yield Use(m.special["css-comment"], "comment", el)
                elif decl.type == "qualified-rule" and "nesting" in m.special:
                    yield Use(m.special["nesting"], "rule", el, selector=selector)
