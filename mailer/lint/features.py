"""caniemail.com's data (mailer/data/caniemail.json), and its feature titles as matchers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from mailer.lint.report import CLIENTS, Client, ClientSupport, Support


@dataclass(frozen=True)
class Feature:
    slug: str
    title: str
    category: str  # css | html | image | others
    url: str
    stats: Mapping[str, tuple[str, str]]  # client key -> (version, "a #1 #3")
    notes_by_num: Mapping[str, str]

    def support(self, client: Client) -> ClientSupport | None:
        """Unsupported or partial in this client's newest version; None when fine or unknown."""
        entry = self.stats.get(client.key)
        if entry is None:
            return None
        version, status = entry
        kinds = {"n": Support.UNSUPPORTED, "a": Support.PARTIAL}
        kind = kinds.get(status.strip()[:1])
        if kind is None:
            return None
        numbers = re.findall(r"#(\d+)", status) if "#" in status else []
        notes = tuple(self.notes_by_num[n] for n in numbers if n in self.notes_by_num)
        return ClientSupport(client, kind, version, notes)


@dataclass(frozen=True)
class CanIEmail:
    features: Mapping[str, Feature]  # by slug
    last_update: str
    source: str


@cache
def caniemail() -> CanIEmail:
    """mailer/data/caniemail.json, read once."""
    text = resources.files("mailer.data").joinpath("caniemail.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    features: dict[str, Feature] = {}
    # The file has every client; lint reports on these.
    wanted = [(client.key, *client.key.split(".")) for client in CLIENTS]
    for item in raw["data"]:
        stats: dict[str, tuple[str, str]] = {}
        for key, family, platform in wanted:
            versions = item["stats"].get(family, {}).get(platform)
            if versions:
                # Versions are listed oldest first: the last one is the newest.
                version = next(reversed(versions))
                stats[key] = (version, str(versions[version]))
        features[item["slug"]] = Feature(
            slug=item["slug"],
            title=str(item["title"]).strip(),
            category=item["category"],
            url=item.get("url") or f"https://www.caniemail.com/features/{item['slug']}/",
            stats=stats,
            notes_by_num={str(k): str(v) for k, v in (item.get("notes_by_num") or {}).items()},
        )
    source = raw.get("source", {})
    return CanIEmail(features, str(raw.get("last_update_date", "")), str(source.get("package", "")))


def _words(text: str) -> list[str]:
    return text.split()


# Titles naming several properties (caniemail's own checker's table, and a few of our own).
_PROPERTY_TITLES = {
    "block-size & inline-size": _words("block-size inline-size"),
    "border-inline & border-block": _words("border-inline border-block"),
    "border-inline & border-block individual logical properties": _words(
        "border-block-end border-block-start border-inline-end border-inline-start"
    ),
    "border-inline & border-block longhand properties": _words(
        "border-block-color border-block-style border-block-width"
        " border-inline-color border-inline-style border-inline-width"
    ),
    "border-radius logical properties": _words(
        "border-end-end-radius border-end-start-radius"
        " border-start-end-radius border-start-start-radius"
    ),
    "color-scheme CSS property": ["color-scheme"],
    "css column properties": _words(
        "column-count column-fill column-gap column-rule column-rule-color column-rule-style"
        " column-rule-width column-span column-width columns"
    ),
    "gap, column-gap, row-gap": _words("column-gap gap row-gap"),
    "grid-template-* properties": _words(
        "grid-template grid-template-areas grid-template-columns grid-template-rows"
    ),
    "margin-block-start & margin-block-end": _words("margin-block-end margin-block-start"),
    "margin-inline & margin-block": _words("margin-block margin-inline"),
    "margin-inline-start & margin-inline-end": _words("margin-inline-end margin-inline-start"),
    "padding-block-start & padding-block-end": _words("padding-block-end padding-block-start"),
    "padding-inline & padding-block": _words("padding-block padding-inline"),
    "padding-inline-start & padding-inline-end": _words("padding-inline-end padding-inline-start"),
    "left, right, top, bottom": _words("left right top bottom"),
}
# Longhands that count as their shorthand's feature (caniemail tests the family under one name).
_LONGHANDS = {
    "margin": r"margin-(top|right|bottom|left)",
    "padding": r"padding-(top|right|bottom|left)",
    "border": r"border-(top|right|bottom|left)(-(width|style|color))?|border-(width|style|color)",
    "border-radius": r"border-(top|bottom)-(left|right)-radius",
    "outline": r"outline-(color|style|width)",
    "overflow": r"overflow-[xy]",
    "animation": r"animation-[a-z-]+",
    "transition": r"transition-[a-z-]+",
    "inset": r"inset-(block|inline)(-start|-end)?",
    "scroll-snap": r"scroll-snap-[a-z-]+",
}
# Titles naming values (caniemail's own checker's table).
_VALUE_TITLES = {
    "fit-content, min-content, max-content": _words("fit-content max-content min-content"),
    "system-ui, ui-serif, ui-sans-serif, ui-rounded, ui-monospace": _words(
        "system-ui ui-monospace ui-rounded ui-sans-serif ui-serif"
    ),
}
_SEMANTICS = _words(
    "article aside details figcaption figure footer header main mark nav section summary time"
)


# caniemail's titles of the kinds of selector (css-what's reading of one, as in doiuse-email).
_SELECTOR_KINDS = frozenset(
    [
        *("Adjacent sibling combinator", "Attribute selector", "Chaining selectors"),
        *("Child combinator", "Class selector", "Descendant combinator"),
        *("General sibling combinator", "Grouping selectors", "ID selector"),
        *("Type selector", "Universal selector *"),
    ]
)


@dataclass(frozen=True)
class _Pair:
    tag: str
    attr: str
    test: Callable[[str], bool] | None  # None: the attribute is there
    slug: str


@dataclass
class Matchers:
    """Property, value, selector, element and attribute -> feature slugs, built from the titles."""

    properties: dict[str, list[str]] = field(default_factory=dict)
    longhands: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    pairs: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    functions: dict[str, list[str]] = field(default_factory=dict)
    units: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    values: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    keywords: dict[str, str] = field(default_factory=dict)
    at_rules: dict[str, list[str]] = field(default_factory=dict)
    media: dict[str, list[str]] = field(default_factory=dict)
    pseudo: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    selectors: dict[str, str] = field(default_factory=dict)  # selector kind title -> slug
    elements: dict[str, list[str]] = field(default_factory=dict)
    attributes: dict[str, list[str]] = field(default_factory=dict)
    element_pairs: list[_Pair] = field(default_factory=list)
    special: dict[str, str] = field(default_factory=dict)  # comments, nesting, doctype...

    def add(self, table: dict[Any, list[str]], key: Any, slug: str) -> None:
        table.setdefault(key, []).append(slug)


@cache
def matchers() -> Matchers:
    m = Matchers()
    for feature in caniemail().features.values():
        title, slug = feature.title, feature.slug
        if feature.category == "css":
            _css_title(m, title, slug)
        elif feature.category in ("html", "others"):
            _html_title(m, title, slug)
    return m


def _css_title(m: Matchers, title: str, slug: str) -> None:
    if slug == "css-inert-attribute":  # the `inert` attribute, filed under CSS
        m.add(m.attributes, "inert", slug)
        return
    if slug.startswith(("css-pseudo-class-", "css-pseudo-element-")):
        name = title.rstrip("()")
        name = name if name.startswith(":") else f":{name}"
        legacy = name.lstrip(":") in ("before", "after", "first-letter", "first-line")
        colons = "::?" if legacy else re.escape(":" * (len(name) - len(name.lstrip(":"))))
        m.pseudo.append((re.compile(colons + re.escape(name.lstrip(":")) + r"(?![\w-])"), slug))
        return
    if title == "CSS comments":
        m.special["css-comment"] = slug
    elif title == "CSS Nesting":
        m.special["nesting"] = slug
    elif title == "CSS Variables (Custom Properties)":
        m.add(m.functions, "var", slug)
    elif title in _SELECTOR_KINDS:
        m.selectors[title] = slug
    elif title in _VALUE_TITLES:
        for value in _VALUE_TITLES[title]:
            m.values.append((re.compile(rf"(?<![\w-]){re.escape(value)}(?![\w-])"), slug))
    elif title.endswith(" keyword"):
        m.keywords[title.removesuffix(" keyword")] = slug
    elif title.endswith(" unit"):
        unit = title.removesuffix(" unit")
        if unit == "initial":
            pattern = r"(?<![\w-])initial(?![\w-])"
        else:  # a number right before it: 2em, not the em of "emphasis"
            pattern = rf"\d{re.escape(unit)}" + ("" if unit == "%" else r"(?![\w%])")
        m.units.append((re.compile(pattern), slug))
    elif title.startswith("@media ("):
        for name in re.findall(r"\(([-a-z]+)\)", title):
            m.add(m.media, name, slug)
    elif re.fullmatch(r"@[a-z-]+", title):
        m.add(m.at_rules, title[1:], slug)
    elif "()" in title:
        for name in re.findall(r"([a-z-]+)\(\)", title):
            m.add(m.functions, name, slug)
    elif pair := re.fullmatch(r"([a-z-]+):\s*([a-z-]+)", title):
        m.add(m.pairs, (pair.group(1), pair.group(2)), slug)
    if title in _PROPERTY_TITLES:
        for name in _PROPERTY_TITLES[title]:
            m.add(m.properties, name, slug)
        return
    name = title.removesuffix(" shorthand").removesuffix(" property").strip()
    if re.fullmatch(r"[a-z-]+", name):
        m.add(m.properties, name, slug)
        if name in _LONGHANDS:
            m.longhands.append((re.compile(_LONGHANDS[name]), slug))


def _html_title(m: Matchers, title: str, slug: str) -> None:
    tags: list[str] = []
    if title == "address":
        tags = ["address"]
    elif title == "HTML5 doctype":
        m.special["doctype"] = slug
    elif title == "HTML comments":
        m.special["html-comment"] = slug
    elif title == "HTML5 semantics":
        tags = _SEMANTICS
    elif title == "Image maps":
        tags = ["map"]
    elif title.startswith("<h1> to <h6>"):
        tags = [f"h{n}" for n in range(1, 7)]
    elif title == "srcset and sizes attributes":
        m.add(m.attributes, "srcset", slug)
        m.add(m.attributes, "sizes", slug)
    elif title.endswith(" attribute"):
        m.add(m.attributes, title.removesuffix(" attribute"), slug)
    elif title == "Local anchors":
        m.element_pairs.append(_Pair("a", "href", lambda v: v.startswith("#"), slug))
        m.element_pairs.append(_Pair("a", "name", None, slug))
    elif title == "mailto: links":
        m.element_pairs.append(_Pair("a", "href", lambda v: v.lower().startswith("mailto:"), slug))
    elif title == "color-scheme meta tag":
        m.element_pairs.append(_Pair("meta", "name", lambda v: v.lower() == "color-scheme", slug))
    elif title == "AMP for Email":
        m.element_pairs.append(_Pair("html", "⚡4email", None, slug))
        m.element_pairs.append(_Pair("html", "amp4email", None, slug))
    elif pair := re.fullmatch(r'<(\w+) (\w+)="(\w+)"> element', title):
        tag, attr, value = pair.groups()
        m.element_pairs.append(_Pair(tag, attr, _equals(value), slug))
    else:
        tags = re.findall(r"<(\w+)>", title)
    for tag in tags:
        m.add(m.elements, tag, slug)


def _equals(want: str) -> Callable[[str], bool]:
    return lambda value: value.strip().lower() == want
