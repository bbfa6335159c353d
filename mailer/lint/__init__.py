"""`mailer lint`: the built email checked against caniemail.com, for accessibility, and its links.

    lint(email, settings)   -> Report: frozen Findings, nothing printed
    summary(report)         -> the one line `mailer build` prints
    as_dict(report)         -> the report as JSON-ready data (`mailer lint --format json`)

Client support. The built HTML (after MJML and premailer: what readers get) is parsed with lxml
and its CSS with tinycss2: every <style> block, @media and other at-rules included, and every
style attribute. What is in it is matched to caniemail.com's features (mailer/data/caniemail.json,
see CANIEMAIL.md) the way @jsx-email/doiuse-email and caniemail's own checker do, from the
features' titles: a property ("border-radius"), a property and value ("display:flex"), a
function, unit, keyword, at-rule, media feature, selector kind, pseudo-class, element,
attribute, element with attribute, image format, comment. Each is looked up in the newest
version caniemail lists for each client platform: "n" is unsupported, "a" partial (with the
data's numbered notes), "y" and "u" (unknown) are not reported. Differences from
doiuse-email, on purpose: longhands count for their shorthand's feature only where caniemail
means them to (margin-top: margin, border-top-left-radius: border-radius); every function of
a title counts ("lch(), oklch(), lab(), oklab()"), and functions are matched at all (doiuse's
lookup compares a title with a name, and never matches); "<h1> to <h6>" is every heading and
"<ul>, <ol> and <dl>" every list; chaining means two classes on one element, not two in one
selector; @media features (prefers-color-scheme, ...) are read from the query; `inert` is the
HTML attribute; units and keywords match whole tokens.

Origins. A finding names where the thing was written: the template file and line (a rule or
declaration in mj-style or a raw <style>, an mj-* attribute MJML turns into CSS such as
border-radius or background-color, a raw tag), the issue file and line (raw HTML in the
Markdown, or the Markdown element itself), or "MJML output" when MJML wrote it (its
mso-conditional tables, its @media rules, its default styles). One finding per feature and
origin, naming every client concerned.

Accessibility: <html lang>, one <h1>, no skipped heading level, alt text, vague link text,
text contrast (WCAG AA: 4.5:1, 3:1 for large text) from inline colours and backgrounds.
Links: schemes other than http, https, mailto and tel, empty and relative links, http://.
The issue's own notices about the language and its links are passed through.

One module rather than a mailer/lint/ package: pyproject.toml names every package it installs.
"""

from __future__ import annotations

import html as html_mod
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import tinycss2  # type: ignore[import-untyped]
from cssselect import SelectorError
from lxml import etree  # type: ignore[import-untyped]
from lxml import html as lxml_html
from lxml.cssselect import CSSSelector  # type: ignore[import-untyped]
from markdown_it.token import Token

from mailer.compose.issue import Issue, located
from mailer.compose.render import HTML_TEMPLATE, Email, template_dirs
from mailer.compose.slots import SLOT_RE
from mailer.config import Settings

# -- the report ---------------------------------------------------------------------------


class Severity(StrEnum):
    """How much a finding matters: `mailer lint --strict` fails on errors."""

    ERROR = "error"  # unsupported in a client; an accessibility or link error
    WARNING = "warning"  # partial support; worth a look


class Section(StrEnum):
    CLIENTS = "client support"
    ACCESSIBILITY = "accessibility"
    LINKS = "links"


class Support(StrEnum):
    """A client's support for a feature, when it is worth reporting."""

    UNSUPPORTED = "unsupported"  # caniemail's "n"
    PARTIAL = "partial"  # caniemail's "a"


class OriginKind(StrEnum):
    TEMPLATE = "template"
    ISSUE = "issue"
    MJML = "mjml"  # written by MJML itself


@dataclass(frozen=True)
class Client:
    key: str  # caniemail's family.platform: outlook.windows
    name: str  # Outlook (Windows)

    @property
    def family(self) -> str:
        return self.key.split(".")[0]


CLIENTS = (
    Client("gmail.desktop-webmail", "Gmail (webmail)"),
    Client("gmail.ios", "Gmail (iOS)"),
    Client("gmail.android", "Gmail (Android)"),
    Client("outlook.windows", "Outlook (Windows)"),
    Client("outlook.macos", "Outlook (macOS)"),
    Client("outlook.outlook-com", "Outlook.com"),
    Client("outlook.ios", "Outlook (iOS)"),
    Client("outlook.android", "Outlook (Android)"),
    Client("apple-mail.macos", "Apple Mail (macOS)"),
    Client("apple-mail.ios", "Apple Mail (iOS)"),
    Client("yahoo.desktop-webmail", "Yahoo (webmail)"),
    Client("yahoo.ios", "Yahoo (iOS)"),
    Client("yahoo.android", "Yahoo (Android)"),
)
FAMILIES = {"gmail": "Gmail", "outlook": "Outlook", "apple-mail": "Apple Mail", "yahoo": "Yahoo"}
_CLIENT_ALIASES = {
    "apple": "apple-mail",
    "applemail": "apple-mail",
    "outlook.com": "outlook.outlook-com",
    "gmail.webmail": "gmail.desktop-webmail",
    "yahoo.webmail": "yahoo.desktop-webmail",
}


def select_clients(spec: str | None) -> tuple[Client, ...]:
    """`gmail,outlook.windows` -> those clients; None or "" -> all. ValueError names the choices."""
    if not spec:
        return CLIENTS
    chosen: set[Client] = set()
    for word in (w.strip().lower() for w in spec.split(",")):
        if not word:
            continue
        key = _CLIENT_ALIASES.get(word, word)
        found = [c for c in CLIENTS if key in (c.key, c.family)]
        if not found:
            families = ", ".join(FAMILIES)
            raise ValueError(
                f"unknown client {word!r}: use {families}, or one platform such as "
                "outlook.windows (`mailer lint --help` lists them)"
            )
        chosen.update(found)
    return tuple(c for c in CLIENTS if c in chosen)


@dataclass(frozen=True)
class ClientSupport:
    client: Client
    support: Support
    version: str  # the version (or test date) caniemail's entry is for
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Origin:
    """Where a finding comes from: a file and line, or MJML's own output."""

    kind: OriginKind
    path: Path | None = None
    line: int | None = None

    def shown(self, root: Path) -> str:
        if self.path is None:
            return "MJML output"
        path = _shown_path(self.path, root)
        return f"{path}:{self.line}" if self.line else str(path)


MJML_OUTPUT = Origin(OriginKind.MJML)


@dataclass(frozen=True)
class Finding:
    section: Section
    severity: Severity
    code: str  # a caniemail feature slug (css-border-radius), or a check: alt, contrast, http
    title: str  # the feature's title, or what the check found
    origin: Origin
    clients: tuple[ClientSupport, ...] = ()
    url: str = ""  # the feature's caniemail.com page


@dataclass(frozen=True)
class Report:
    issue: str  # the issue's name
    root: Path  # the project, for showing paths
    findings: tuple[Finding, ...]
    clients: tuple[Client, ...]  # the clients checked
    data_date: str  # caniemail data: last update
    data_source: str  # caniemail data: the package and version it came from

    def of(self, section: Section) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.section == section)

    @property
    def errors(self) -> int:
        return sum(f.severity == Severity.ERROR for f in self.findings)


def lint(email: Email, settings: Settings, *, clients: Sequence[Client] | None = None) -> Report:
    """Check a rendered email: client support, accessibility, links. Prints nothing."""
    chosen = tuple(clients) if clients else CLIENTS
    data = caniemail()
    doc = lxml_html.document_fromstring(email.html)
    template = _Template.load(settings)
    issue = _IssueSource(email.issue, template.content_class, doc)
    origins = _Origins(doc, template, issue)
    findings = _client_findings(email.html, doc, data, chosen, origins)
    findings += _accessibility(doc, email, origins)
    findings += _links(doc, email, origins)
    return Report(
        issue=email.issue.slug,
        root=settings.root,
        findings=tuple(_dedupe(findings)),
        clients=chosen,
        data_date=data.last_update,
        data_source=data.source,
    )


def summary(report: Report) -> str:
    """One line for `mailer build`: how many findings of each kind, and where to see them."""
    clients = report.of(Section.CLIENTS)
    if not report.findings:
        return f"lint: no findings for {len(report.clients)} email clients"
    by_family: dict[str, int] = {}
    for finding in clients:
        for family in dict.fromkeys(s.client.family for s in finding.clients):
            by_family[family] = by_family.get(family, 0) + 1
    families = sorted(by_family.items(), key=lambda kv: (-kv[1], list(FAMILIES).index(kv[0])))
    per = ", ".join(f"{FAMILIES[f]} {n}" for f, n in families)
    parts = [_count(len(clients), "client finding") + (f" ({per})" if per else "")]
    parts.append(f"{len(report.of(Section.ACCESSIBILITY))} accessibility")
    parts.append(_count(len(report.of(Section.LINKS)), "link"))
    return f"lint: {', '.join(parts)} — mailer lint {report.issue} for details"


def as_dict(report: Report) -> dict[str, Any]:
    """The report as plain data, for `--format json`."""
    return {
        "issue": report.issue,
        "caniemail": {"last_update": report.data_date, "source": report.data_source},
        "clients": [{"client": c.key, "name": c.name} for c in report.clients],
        "findings": [
            {
                "section": f.section.value,
                "severity": f.severity.value,
                "code": f.code,
                "title": f.title,
                "origin": {
                    "kind": f.origin.kind.value,
                    "path": str(_shown_path(f.origin.path, report.root)) if f.origin.path else None,
                    "line": f.origin.line,
                    "shown": f.origin.shown(report.root),
                },
                "clients": [
                    {
                        "client": s.client.key,
                        "name": s.client.name,
                        "support": s.support.value,
                        "version": s.version,
                        "notes": list(s.notes),
                    }
                    for s in f.clients
                ],
                "url": f.url,
            }
            for f in report.findings
        ],
        "summary": {
            "client_support": len(report.of(Section.CLIENTS)),
            "accessibility": len(report.of(Section.ACCESSIBILITY)),
            "links": len(report.of(Section.LINKS)),
            "errors": report.errors,
        },
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _shown_path(path: Path, root: Path) -> Path:
    full, base = path.resolve(), root.resolve()
    return full.relative_to(base) if full.is_relative_to(base) else full


def _dedupe(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per (section, code, origin); the first one found stays."""
    seen: dict[tuple[Section, str, Origin, str], Finding] = {}
    for finding in findings:
        key = (finding.section, finding.code, finding.origin, _dedupe_text(finding))
        seen.setdefault(key, finding)
    return list(seen.values())


def _dedupe_text(finding: Finding) -> str:
    # Client findings merge per feature and origin; other checks keep each distinct message
    # (two low-contrast colours set on one template line are two findings).
    return "" if finding.section == Section.CLIENTS else finding.title


# -- caniemail's data ---------------------------------------------------------------------


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


# -- what the HTML and CSS use, as caniemail feature slugs ----------------------------------


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
class _Matchers:
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
def _matchers() -> _Matchers:
    m = _Matchers()
    for feature in caniemail().features.values():
        title, slug = feature.title, feature.slug
        if feature.category == "css":
            _css_title(m, title, slug)
        elif feature.category in ("html", "others"):
            _html_title(m, title, slug)
    return m


def _css_title(m: _Matchers, title: str, slug: str) -> None:
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


def _html_title(m: _Matchers, title: str, slug: str) -> None:
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


def _property_slugs(m: _Matchers, prop: str, value: str, important: bool) -> list[str]:
    """Every feature a declaration uses: its property, value, functions, units, keywords."""
    slugs = list(m.properties.get(prop, ()))
    slugs += [slug for pattern, slug in m.longhands if pattern.fullmatch(prop)]
    if prop.startswith("--"):
        slugs += m.functions.get("var", [])
    plain = _norm_value(value)
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


def _selector_slugs(m: _Matchers, selector: str) -> list[str]:
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


def _media_slugs(m: _Matchers, prelude: str) -> list[str]:
    slugs: list[str] = []
    for name in re.findall(r"\(\s*([-a-z]+)", prelude.lower()):
        base = re.sub(r"^(-[a-z]+-)?(min-|max-)", r"\1", name)
        if base == "device-pixel-ratio":
            base = "-webkit-device-pixel-ratio"
        slugs += m.media.get(base, [])
    return slugs


_SPACES = re.compile(r"\s+")
_PUNCT_SPACE = re.compile(r"\s*([,()/])\s*")
_SHORT_HEX = re.compile(r"#([0-9a-f])([0-9a-f])([0-9a-f])(?![0-9a-f])")
_ZERO = re.compile(r"(?<![\w.#-])0(?:px|pt|em|rem)(?![\w%])")


@lru_cache(maxsize=8192)
def _norm_value(value: str) -> str:
    """A CSS value as premailer and MJML may have rewritten it: one form to compare."""
    text = value.lower().replace("!important", "").replace('"', "").replace("'", "")
    text = _PUNCT_SPACE.sub(r"\1", _SPACES.sub(" ", text).strip())
    return _ZERO.sub("0", _SHORT_HEX.sub(r"#\1\1\2\2\3\3", text))


def _norm_selector(selector: str) -> str:
    text = re.sub(r"\s+", " ", selector).strip()
    return re.sub(r"\s*([>+~,])\s*", r"\1", text)


UseKind = Literal["decl", "rule", "atrule", "element", "attribute", "doctype", "comment"]


@dataclass(frozen=True, eq=False)
class _Use:
    """One place in the built HTML that uses a feature."""

    slug: str
    kind: UseKind
    element: Any  # the lxml element (for a stylesheet: its <style>)
    name: str = ""  # property, attribute or at-rule name
    value: str = ""
    selector: str = ""  # the rule's selector, for a stylesheet's declarations


_KEEP_COMMENTS = {"skip_comments": False, "skip_whitespace": True}
_NO_COMMENTS = {"skip_comments": True, "skip_whitespace": True}
_GROUPING_AT_RULES = frozenset({"media", "supports", "document", "layer", "container"})


def _uses(html: str, doc: Any, m: _Matchers) -> Iterator[_Use]:
    """Every use of a caniemail feature in the built email, in document order."""
    if "doctype" in m.special and re.match(r"\s*<!doctype html\s*>", html, re.I):
        yield _Use(m.special["doctype"], "doctype", doc)
    for el in doc.iter():
        if not isinstance(el.tag, str):
            if el.tag is etree.Comment and "html-comment" in m.special:
                yield _Use(m.special["html-comment"], "comment", el)
            continue
        tag = el.tag.lower()
        for slug in m.elements.get(tag, ()):
            yield _Use(slug, "element", el)
        for name, value in el.attrib.items():
            name = name.lower()
            for slug in m.attributes.get(name, ()):
                yield _Use(slug, "attribute", el, name, value)
            for pair in m.element_pairs:
                if (
                    pair.tag == tag
                    and pair.attr == name
                    and (pair.test is None or pair.test(value))
                ):
                    yield _Use(pair.slug, "attribute", el, name, value)
        images = [el.get("src", "")] if tag == "img" else []
        images += [c.strip().split(" ")[0] for c in el.get("srcset", "").split(",") if c.strip()]
        for url in images:
            for slug in _image_slugs(url):
                yield _Use(slug, "attribute", el, "src", url)
        style = el.get("style")
        if style:
            for name, raw, important in _declarations(style):
                value = raw.strip()
                for slug in _property_slugs(m, name, value, important):
                    yield _Use(slug, "decl", el, name, value)
        if tag == "style" and el.text:
            yield from _stylesheet_uses(el, el.text, m)


@lru_cache(maxsize=4096)
def _declarations(style: str) -> tuple[tuple[str, str, bool], ...]:
    """A style attribute's declarations, (lower-case name, value as written, !important):
    parsed once per distinct text (a built email repeats a few dozen of them ~10 times)."""
    return tuple(
        (decl.lower_name, tinycss2.serialize(decl.value), bool(decl.important))
        for decl in tinycss2.parse_declaration_list(style, **_NO_COMMENTS)
        if decl.type == "declaration"
    )


def _stylesheet_uses(el: Any, css: str, m: _Matchers) -> Iterator[_Use]:
    yield from _rule_uses(el, tinycss2.parse_stylesheet(css, **_KEEP_COMMENTS), m)


def _rule_uses(el: Any, rules: Iterable[Any], m: _Matchers) -> Iterator[_Use]:
    for rule in rules:
        if rule.type == "comment" and "css-comment" in m.special:
            yield _Use(m.special["css-comment"], "comment", el)
        elif rule.type == "at-rule":
            name, prelude = rule.lower_at_keyword, tinycss2.serialize(rule.prelude).strip()
            media = _media_slugs(m, prelude) if name == "media" else []
            for slug in m.at_rules.get(name, []) + media:
                yield _Use(slug, "atrule", el, name, prelude)
            if rule.content is not None and name in _GROUPING_AT_RULES:
                yield from _rule_uses(
                    el, tinycss2.parse_rule_list(rule.content, **_KEEP_COMMENTS), m
                )
        elif rule.type == "qualified-rule":
            selector = tinycss2.serialize(rule.prelude).strip()
            for slug in _selector_slugs(m, selector):
                yield _Use(slug, "rule", el, selector=selector)
            for decl in tinycss2.parse_blocks_contents(rule.content, **_KEEP_COMMENTS):
                if decl.type == "declaration":
                    value = tinycss2.serialize(decl.value).strip()
                    for slug in _property_slugs(m, decl.lower_name, value, decl.important):
                        yield _Use(slug, "decl", el, decl.lower_name, value, selector)
                elif decl.type == "comment" and "css-comment" in m.special:
                    yield _Use(m.special["css-comment"], "comment", el)
                elif decl.type == "qualified-rule" and "nesting" in m.special:
                    yield _Use(m.special["nesting"], "rule", el, selector=selector)


def _client_findings(
    html: str, doc: Any, data: CanIEmail, clients: tuple[Client, ...], origins: _Origins
) -> list[Finding]:
    supports: dict[str, tuple[ClientSupport, ...]] = {}
    for slug, feature in data.features.items():
        found = tuple(s for c in clients if (s := feature.support(c)) is not None)
        if found:
            supports[slug] = found
    findings: dict[tuple[str, Origin], Finding] = {}
    for use in _uses(html, doc, _matchers()):
        if use.slug not in supports:
            continue
        origin = origins.of(use)
        key = (use.slug, origin)
        if key in findings:
            continue
        feature = data.features[use.slug]
        found = supports[use.slug]
        severity = (
            Severity.ERROR
            if any(s.support == Support.UNSUPPORTED for s in found)
            else Severity.WARNING
        )
        findings[key] = Finding(
            Section.CLIENTS, severity, use.slug, feature.title, origin, found, feature.url
        )
    order = {OriginKind.TEMPLATE: 0, OriginKind.ISSUE: 1, OriginKind.MJML: 2}
    return sorted(
        findings.values(),
        key=lambda f: (order[f.origin.kind], str(f.origin.path or ""), f.origin.line or 0, f.code),
    )


# -- where things were written: the template -------------------------------------------------

_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.S)
_HOLE = "\x01"  # where a template expression was: anything may stand there
_PLACE = "\x02"  # where {{ content }} was
_TAG = re.compile(r"<([a-zA-Z][\w:.-]*)((?:[^<>\"']|\"[^\"]*\"|'[^']*')*)/?>")
_ATTR = re.compile(r"""([^\s"'<>/=]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"'<>`]+))?""")
_CSS_RULE = re.compile(r"([^{}<>;]*)\{([^{}]*)\}")
_CSS_DECL = re.compile(r"([-\w\x01]+)\s*:\s*([^;{}]*)")
_AT_RULE = re.compile(r"@([a-zA-Z-]+)\s*([^{};]*)\{")
_INCLUDE = re.compile(r"\{%-?\s*(?:include|extends|import|from)\s+[\"']([^\"']+)[\"']")
_CONTENT = re.compile(r"\{\{-?\s*content\b")
# mj-* attributes MJML writes as CSS under another name (or under several).
_MJ_CSS = {
    "align": ("text-align",),
    "background-color": ("background", "background-color"),
    "container-background-color": ("background", "background-color"),
    "background-url": ("background", "background-image"),
    "background-size": ("background", "background-size"),
    "background-repeat": ("background", "background-repeat"),
    "background-position": ("background", "background-position"),
    "padding": ("padding", "padding-top", "padding-right", "padding-bottom", "padding-left"),
    "inner-padding": ("padding",),
    "inner-border-radius": ("border-radius",),
    "vertical-align": ("vertical-align",),
}
_MJ_NOT_CSS = frozenset(
    [
        *("css-class", "mj-class", "href", "src", "srcset", "sizes", "alt", "title", "rel"),
        *("target", "name", "lang", "dir", "owa", "full-width", "icon-position", "mode"),
    ]
)
# Elements MJML writes for a component of the template.
_MJ_ELEMENTS = {"html": "mjml", "body": "mj-body", "title": "mj-title", "head": "mj-head"}


def _pattern(text: str, norm: Callable[[str], str], hole: str = ".*") -> re.Pattern[str]:
    """A written value with template expressions in it -> a pattern for what they became."""
    parts = text.split(_HOLE)
    out = re.escape(norm(parts[0]))
    for part in parts[1:]:
        if not out.endswith(hole):  # holes side by side are one hole (and no slow pattern)
            out += hole
        out += re.escape(norm(part))
    return re.compile(out, re.S)


@dataclass(frozen=True)
class _TDecl:
    line: int
    prop: re.Pattern[str]
    value: re.Pattern[str]
    selector: re.Pattern[str] | None = None  # declared in a CSS rule with this selector
    css: str | None = None  # that selector without template expressions, to match elements
    tag: str | None = None  # declared in a style="" attribute of this raw element


@dataclass(frozen=True)
class _TTag:
    line: int
    tag: str
    attrs: Mapping[str, str]  # as written (template expressions as _HOLE)
    classes: frozenset[str] = frozenset()
    values: Mapping[str, re.Pattern[str]] = field(default_factory=dict)  # as CSS values
    exact: Mapping[str, re.Pattern[str]] = field(default_factory=dict)  # as written

    @classmethod
    def of(cls, line: int, tag: str, attrs: dict[str, str]) -> _TTag:
        classes = frozenset((attrs.get("css-class") or attrs.get("class") or "").split())
        values = {k: _pattern(v, _norm_value) for k, v in attrs.items()}
        exact = {k: _pattern(v, str.strip) for k, v in attrs.items()}
        return cls(line, tag, attrs, classes, values, exact)


@dataclass(frozen=True)
class _TemplateFile:
    path: Path
    decls: tuple[_TDecl, ...]
    rules: tuple[tuple[int, re.Pattern[str]], ...]  # (line, selector)
    at_rules: tuple[tuple[int, str, re.Pattern[str]], ...]  # (line, name, prelude)
    tags: tuple[_TTag, ...]  # raw tags and mj-* components
    styles: tuple[tuple[int, int, bool], ...]  # <mj-style>, <style>: first line, last, raw?
    content_class: str | None  # css-class of the component holding {{ content }}

    @classmethod
    def read(cls, path: Path) -> _TemplateFile:
        source = path.read_text(encoding="utf-8", errors="replace")
        text = _JINJA_COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), source)
        text = _JINJA.sub(
            lambda m: (
                (_PLACE if _CONTENT.match(m.group(0)) else _HOLE) + "\n" * m.group(0).count("\n")
            ),
            text,
        )
        content = text.find(_PLACE)
        text = text.replace(_PLACE, _HOLE)
        starts = [0, *(i + 1 for i, ch in enumerate(text) if ch == "\n")]

        def line(pos: int) -> int:
            lo, hi = 0, len(starts)
            while lo + 1 < hi:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if starts[mid] <= pos else (lo, mid)
            return lo + 1

        decls: list[_TDecl] = []
        rules: list[tuple[int, re.Pattern[str]]] = []
        for rule in _CSS_RULE.finditer(text):
            prelude = rule.group(1)
            if not prelude.strip() or prelude.strip().startswith("@"):
                continue
            selector = _pattern(prelude, _norm_selector, hole="[^,]*")
            css = _norm_selector(prelude.replace(_HOLE, " ")).strip()
            first = re.search(r"[^\s\x01]", prelude)
            rules.append((line(rule.start(1) + (first.start() if first else 0)), selector))
            for decl in _CSS_DECL.finditer(rule.group(2)):
                decls.append(
                    _TDecl(
                        line(rule.start(2) + decl.start()),
                        _pattern(decl.group(1).lower(), str.strip),
                        _pattern(decl.group(2), _norm_value),
                        selector,
                        css,
                    )
                )
        at_rules = tuple(
            (line(m.start()), m.group(1).lower(), _pattern(m.group(2), _norm_value))
            for m in _AT_RULE.finditer(text)
        )
        tags: list[_TTag] = []
        content_class: str | None = None
        for tag in _TAG.finditer(text):
            name = tag.group(1).lower()
            attrs: dict[str, str] = {}
            for attr in _ATTR.finditer(tag.group(2)):
                raw = attr.group(2) or ""
                attrs.setdefault(attr.group(1).lower(), html_mod.unescape(raw.strip("\"'")))
            written = _TTag.of(line(tag.start()), name, attrs)
            tags.append(written)
            if content >= 0 and tag.start() < content and name.startswith("mj-"):
                classes = (attrs.get("css-class") or "").split()
                content_class = classes[0] if classes else None
            style = attrs.get("style")
            if style and not name.startswith("mj"):
                for decl in _CSS_DECL.finditer(style):
                    decls.append(
                        _TDecl(
                            line(tag.start()),
                            _pattern(decl.group(1).lower(), str.strip),
                            _pattern(decl.group(2), _norm_value),
                            tag=name,
                        )
                    )
        styles = tuple(
            (line(m.start()), line(m.end()), m.group(1) == "style")
            for m in re.finditer(r"<(mj-style|style)\b[^>]*>.*?</\1>", text, re.S)
        )
        return cls(path, tuple(decls), tuple(rules), at_rules, tuple(tags), styles, content_class)


@dataclass(frozen=True)
class _Template:
    files: tuple[_TemplateFile, ...]

    @property
    def content_class(self) -> str | None:
        return next((f.content_class for f in self.files if f.content_class), None)

    @classmethod
    def load(cls, settings: Settings) -> _Template:
        """The HTML template and every template it includes, extends or imports."""
        dirs = template_dirs(settings)
        found: list[_TemplateFile] = []
        todo, seen = [HTML_TEMPLATE], set()
        while todo:
            name = todo.pop(0)
            if name in seen:
                continue
            seen.add(name)
            path = next((d / name for d in dirs if (d / name).is_file()), None)
            if path is None:
                continue
            found.append(_TemplateFile.read(path))
            todo += _INCLUDE.findall(path.read_text(encoding="utf-8", errors="replace"))
        return cls(tuple(found))


# -- where things were written: the issue ----------------------------------------------------


@dataclass(frozen=True, eq=False)
class _IElem:
    """An element the issue wrote: raw HTML, or what a Markdown token becomes."""

    tag: str
    line: int | None
    raw: bool  # written as HTML in the issue
    attrs: Mapping[str, str] = field(default_factory=dict)
    decls: Mapping[str, str] = field(default_factory=dict)  # style="" (normalised values)


class _IssueSource:
    """The issue's elements in reading order, with their lines in the issue file."""

    def __init__(self, issue: Issue, content_class: str | None, doc: Any) -> None:
        self.path = issue.path
        self.elements: list[_IElem] = []
        self.images: dict[str, list[int | None]] = {}
        self.links: dict[str, list[int | None]] = {}
        for token, line in located(issue.tokens, issue.lines):
            self._token(token, line)
        self.by_tag: dict[str, list[_IElem]] = {}
        for element in self.elements:
            self.by_tag.setdefault(element.tag, []).append(element)
        self.root = _content_root(doc, content_class)
        self.inside: dict[Any, int] = {}  # built element -> its index among its tag, in content
        self._same_url: dict[tuple[str, str], list[Any]] = {}
        if self.root is not None:
            counts: dict[str, int] = {}
            for el in self.root.iterdescendants():
                if isinstance(el.tag, str):
                    tag = el.tag.lower()
                    self.inside[el] = counts.get(tag, 0)
                    counts[tag] = counts.get(tag, 0) + 1

    def _token(self, token: Token, line: int | None) -> None:
        if token.type in ("html_block", "html_inline"):
            self._raw(token.content, line)
            return
        if token.type == "image":
            self.images.setdefault(str(token.attrs.get("src", "")), []).append(line)
        if token.type == "link_open":
            self.links.setdefault(str(token.attrs.get("href", "")), []).append(line)
        if token.type in ("fence", "code_block"):
            self.elements += [_IElem("pre", line, False), _IElem("code", line, False)]
        elif token.tag and token.nesting >= 0 and not token.hidden:  # tight lists: no <p>
            tag = "img" if token.type == "image" else token.tag
            self.elements.append(_IElem(tag, line, False))

    def _raw(self, content: str, line: int | None) -> None:
        if not re.search(r"<[a-zA-Z]", content):
            return
        try:
            parts = lxml_html.fragments_fromstring(content)
        except (etree.ParserError, ValueError):
            return
        for part in parts:
            if not hasattr(part, "iter"):
                continue
            for el in part.iter():
                if not isinstance(el.tag, str):
                    continue
                where = line + (el.sourceline or 1) - 1 if line is not None else None
                attrs = {k.lower(): v for k, v in el.attrib.items()}
                decls = _style_decls(attrs.get("style", ""))
                self.elements.append(_IElem(el.tag.lower(), where, True, attrs, decls))
                if el.tag.lower() == "img":
                    self.images.setdefault(attrs.get("src", ""), []).append(where)
                if el.tag.lower() == "a" and "href" in attrs:
                    self.links.setdefault(attrs["href"], []).append(where)

    def element(self, el: Any) -> _IElem | None:
        """The issue element a built element inside the content came from, if one can tell."""
        index = self.inside.get(el)
        if index is None:
            return None
        tag = el.tag.lower()
        by_url = {"img": ("src", self.images), "a": ("href", self.links)}
        if tag in by_url:
            attr, lines = by_url[tag]
            url = el.get(attr)
            if url in lines:
                line = self._nth(el, tag, attr, lines[url])
                same = [e for e in self.by_tag.get(tag, []) if e.line == line]
                return same[0] if same else _IElem(tag, line, False)
        same = self.by_tag.get(tag, [])
        if not same:
            return None
        return same[index] if index < len(same) else same[-1]

    def _nth(self, el: Any, tag: str, attr: str, lines: list[int | None]) -> int | None:
        """The line of this element among the issue's elements with the same URL."""
        key = (tag, el.get(attr))
        if key not in self._same_url:
            self._same_url[key] = [e for e in self.root.iter(tag) if e.get(attr) == el.get(attr)]
        same = self._same_url[key]
        index = same.index(el) if el in same else 0
        return lines[min(index, len(lines) - 1)]

    def contains(self, el: Any) -> bool:
        return el in self.inside


def _content_root(doc: Any, css_class: str | None) -> Any:
    """The element the issue's content was rendered into (inside the component holding it)."""
    if not css_class:
        return None
    found = doc.xpath(
        "//*[contains(concat(' ', normalize-space(@class), ' '), $c)]", c=f" {css_class} "
    )
    if not found:
        return None
    holder = found[0]
    inner = [c for c in holder if isinstance(c.tag, str) and c.tag.lower() == "div"]
    return inner[0] if inner else holder


def _style_decls(style: str) -> dict[str, str]:
    return {name: _norm_value(value) for name, value, _ in _declarations(style)}


# -- where things were written: resolving one use --------------------------------------------


@cache
def _mjml_defaults() -> tuple[tuple[str, frozenset[str]], ...]:
    """MJML's own head styles (its skeleton), which premailer inlines: (selector, properties)."""
    css = _MJML_SKELETON_CSS
    try:
        from mjml.helpers import skeleton

        styles = re.findall(r"<style[^>]*>(.*?)</style>", skeleton.skeleton_tmpl_str, re.S)
        css = styles[0] if styles else css
    except (ImportError, AttributeError):
        pass
    out = []
    for rule in tinycss2.parse_stylesheet(css, skip_whitespace=True, skip_comments=True):
        if rule.type == "qualified-rule":
            names = {
                d.lower_name
                for d in tinycss2.parse_blocks_contents(rule.content, skip_whitespace=True)
                if d.type == "declaration"
            }
            out.append((tinycss2.serialize(rule.prelude).strip(), frozenset(names)))
    return tuple(out)


_MJML_SKELETON_CSS = """
#outlook a { padding:0; }
body { margin:0;padding:0;-webkit-text-size-adjust:100%;-ms-text-size-adjust:100%; }
table, td { border-collapse:collapse;mso-table-lspace:0pt;mso-table-rspace:0pt; }
img { border:0;height:auto;line-height:100%; outline:none;text-decoration:none;
  -ms-interpolation-mode:bicubic; }
p { display:block;margin:13px 0; }
"""


class _Origins:
    """Find, for each use, the template or issue line that wrote it."""

    def __init__(self, doc: Any, template: _Template, issue: _IssueSource) -> None:
        self.doc = doc
        self.template = template
        self.issue = issue
        self._matched: dict[str, frozenset[Any]] = {}
        # (template file, property, normalised value) -> its rule declarations that could be it
        self._written: dict[tuple[int, str, str], list[_TDecl]] = {}
        self._styles: dict[Any, Origin] = {}
        self._used_styles: set[tuple[Path, int]] = set()

    def of(self, use: _Use) -> Origin:
        if use.kind == "decl" and not use.selector:
            return self.inline(use.element, use.name, use.value)
        if use.kind == "decl":
            return self.sheet_decl(use.selector, use.name, use.value)
        if use.kind == "rule":
            return self.rule(use.selector)
        if use.kind == "atrule":
            return self.at_rule(use.name, use.value)
        if use.kind == "element":
            return self.element(use.element)
        if use.kind == "attribute":
            return self.attribute(use.element, use.name, use.value)
        return MJML_OUTPUT  # the doctype, comments: MJML writes them

    def _matches(self, css: str, el: Any) -> bool:
        if css not in self._matched:
            try:
                self._matched[css] = frozenset(CSSSelector(css)(self.doc))
            except SelectorError:  # what cssselect cannot read (::before, :hover): no match
                self._matched[css] = frozenset()
        return el in self._matched[css]

    def in_issue(self, line: int | None) -> Origin:
        return Origin(OriginKind.ISSUE, self.issue.path, line)

    def inline(self, el: Any, prop: str, value: str) -> Origin:
        """A style attribute's declaration: raw HTML, mj-style rule, MJML, mj-* attribute."""
        plain = _norm_value(value)
        own = self.issue.element(el)
        if own is not None and own.raw and prop in own.decls:
            return self.in_issue(own.line)
        tag = el.tag.lower()
        for i, f in enumerate(self.template.files):
            written = self._written.get((i, prop, plain))
            if written is None:  # the same declaration recurs on many elements: match it once
                written = [
                    d
                    for d in f.decls
                    if d.css is not None and d.prop.fullmatch(prop) and d.value.fullmatch(plain)
                ]
                self._written[(i, prop, plain)] = written
            hits = [d for d in written if d.css is not None and self._matches(d.css, el)]
            if hits:
                return Origin(OriginKind.TEMPLATE, f.path, hits[-1].line)
        for selector, names in _mjml_defaults():
            if prop in names and self._matches(selector, el):
                return MJML_OUTPUT
        for f in self.template.files:
            for d in f.decls:
                if d.tag == tag and d.prop.fullmatch(prop) and d.value.fullmatch(plain):
                    return Origin(OriginKind.TEMPLATE, f.path, d.line)
        attr = self._mj_attribute(el, prop, plain)
        if attr is not None:
            return attr
        if own is not None:
            return self.in_issue(own.line)  # the render wrote it for this element (image sizes)
        return MJML_OUTPUT

    def _mj_attribute(self, el: Any, prop: str, plain: str) -> Origin | None:
        for f in self.template.files:
            hits = []
            for t in f.tags:
                if not t.tag.startswith("mj-"):
                    continue
                for name, pattern in t.values.items():
                    if name in _MJ_NOT_CSS or prop not in _MJ_CSS.get(name, (name,)):
                        continue
                    shorthand = prop != name and prop in ("background", "padding")
                    if (pattern.search if shorthand else pattern.fullmatch)(plain):
                        hits.append(t)
            if hits:
                return Origin(OriginKind.TEMPLATE, f.path, self._pick(hits, el).line)
        return None

    def _pick(self, tags: list[_TTag], el: Any) -> _TTag:
        """Among components that could have written it, the one this element belongs to."""
        if len(tags) == 1:
            return tags[0]
        for ancestor in [el, *el.iterancestors()]:
            classes = set((ancestor.get("class") or "").split())
            same = [t for t in tags if t.classes & classes]
            if same:
                shared = sorted(same[0].classes & classes)[0]
                outer = [
                    e
                    for e in self.doc.xpath(
                        "//*[contains(concat(' ', normalize-space(@class), ' '), $c)]",
                        c=f" {shared} ",
                    )
                    if not any(shared in (a.get("class") or "").split() for a in e.iterancestors())
                ]
                with_class = [t for f in self.template.files for t in f.tags if shared in t.classes]
                if ancestor in outer and len(outer) == len(with_class):
                    chosen = with_class[outer.index(ancestor)]
                    if chosen in tags:
                        return chosen
                return same[0]
        return tags[0]

    def sheet_decl(self, selector: str, prop: str, value: str) -> Origin:
        plain, sel = _norm_value(value), _norm_selector(selector)
        for f in self.template.files:
            for d in f.decls:
                if (
                    d.selector is not None
                    and d.prop.fullmatch(prop)
                    and d.value.fullmatch(plain)
                    and d.selector.fullmatch(sel)
                ):
                    return Origin(OriginKind.TEMPLATE, f.path, d.line)
        return MJML_OUTPUT

    def rule(self, selector: str) -> Origin:
        sel = _norm_selector(selector)
        for f in self.template.files:
            for line, pattern in f.rules:
                if pattern.fullmatch(sel):
                    return Origin(OriginKind.TEMPLATE, f.path, line)
        return MJML_OUTPUT

    def at_rule(self, name: str, prelude: str) -> Origin:
        plain = _norm_value(prelude)
        for f in self.template.files:
            for line, written, pattern in f.at_rules:
                if written == name and pattern.fullmatch(plain):
                    return Origin(OriginKind.TEMPLATE, f.path, line)
        return MJML_OUTPUT

    def element(self, el: Any) -> Origin:
        tag = el.tag.lower()
        own = self.issue.element(el)
        if own is not None:
            return self.in_issue(own.line)
        if tag == "style":
            return self.style(el)
        for f in self.template.files:
            written = [t for t in f.tags if t.tag == tag]
            if not written and tag in _MJ_ELEMENTS:
                written = [t for t in f.tags if t.tag == _MJ_ELEMENTS[tag]]
            if written:
                same = [e for e in self.doc.iter(tag) if not self.issue.contains(e)]
                index = same.index(el) if el in same and len(same) == len(written) else 0
                return Origin(OriginKind.TEMPLATE, f.path, written[index].line)
        return MJML_OUTPUT

    def style(self, el: Any) -> Origin:
        """A <style> element: the template's <style> or <mj-style> it came from, or MJML's."""
        if el in self._styles:
            return self._styles[el]
        origin = MJML_OUTPUT
        written = next(
            (
                o
                for sel, prop, value in _sheet_decls(el.text or "")
                if (o := self.sheet_decl(sel, prop, value)).kind == OriginKind.TEMPLATE
            ),
            None,
        )
        if written is not None and written.path is not None:
            f = next(f for f in self.template.files if f.path == written.path)
            line = written.line or 0
            region = next((s for s in f.styles if s[0] <= line <= s[1]), None)
            if region is None:  # written in a macro: the next raw <style> not taken yet
                region = next(
                    (s for s in f.styles if s[2] and (f.path, s[0]) not in self._used_styles),
                    None,
                )
            if region is not None:
                self._used_styles.add((f.path, region[0]))
                origin = Origin(OriginKind.TEMPLATE, f.path, region[0])
        self._styles[el] = origin
        return origin

    def attribute(self, el: Any, name: str, value: str) -> Origin:
        tag = el.tag.lower()
        own = self.issue.element(el)
        if own is not None:
            return self.in_issue(own.line)
        for f in self.template.files:
            for t in f.tags:
                same = t.tag == tag or (tag in _MJ_ELEMENTS and t.tag == _MJ_ELEMENTS[tag])
                if same and name in t.attrs and t.exact[name].fullmatch(value.strip()):
                    return Origin(OriginKind.TEMPLATE, f.path, t.line)
            if name in ("lang", "dir"):  # MJML copies <mjml lang dir> onto its wrapper too
                for t in f.tags:
                    if t.tag == "mjml" and name in t.attrs:
                        return Origin(OriginKind.TEMPLATE, f.path, t.line)
        return MJML_OUTPUT

    def link(self, a: Any) -> Origin:
        """Where a link was written: in the issue, or a raw <a> of the template."""
        own = self.issue.element(a)
        if own is not None:
            return self.in_issue(own.line)
        href = a.get("href", "")
        for f in self.template.files:
            for t in f.tags:
                if t.tag == "a" and "href" in t.attrs and t.exact["href"].fullmatch(href.strip()):
                    return Origin(OriginKind.TEMPLATE, f.path, t.line)
        return MJML_OUTPUT


def _sheet_decls(css: str) -> Iterator[tuple[str, str, str]]:
    """(selector, property, value) of every declaration in a stylesheet, at-rules included."""

    def walk(rules: Iterable[Any]) -> Iterator[tuple[str, str, str]]:
        for rule in rules:
            if rule.type == "at-rule" and rule.content is not None:
                yield from walk(
                    tinycss2.parse_rule_list(rule.content, skip_comments=True, skip_whitespace=True)
                )
            elif rule.type == "qualified-rule":
                selector = tinycss2.serialize(rule.prelude).strip()
                for decl in tinycss2.parse_blocks_contents(
                    rule.content, skip_comments=True, skip_whitespace=True
                ):
                    if decl.type == "declaration":
                        yield selector, decl.lower_name, tinycss2.serialize(decl.value).strip()

    yield from walk(tinycss2.parse_stylesheet(css, skip_comments=True, skip_whitespace=True))


# -- accessibility ----------------------------------------------------------------------------

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


def _accessibility(doc: Any, email: Email, origins: _Origins) -> list[Finding]:
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
        template = origins.template.files[0].path if origins.template.files else None
        where = Origin(OriginKind.TEMPLATE, template) if template else MJML_OUTPUT
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
                _norm_value(style[prop]) in (value, f"{value}px")
                for prop, value in _HIDING
                if prop in style
            )
        hidden = hidden or (parent is not None and self.hidden(parent))
        self._hidden[el] = hidden
        return hidden


def _raw_decls(style: str) -> dict[str, str]:
    return {name: value.strip() for name, value, _ in _declarations(style)}


_NAMED_COLOURS = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "red": (255, 0, 0),
    "green": (0, 128, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "silver": (192, 192, 192),
    "lightgray": (211, 211, 211),
    "lightgrey": (211, 211, 211),
    "darkgray": (169, 169, 169),
    "darkgrey": (169, 169, 169),
    "navy": (0, 0, 128),
    "orange": (255, 165, 0),
    "purple": (128, 0, 128),
    "maroon": (128, 0, 0),
    "teal": (0, 128, 128),
    "olive": (128, 128, 0),
    "lime": (0, 255, 0),
    "aqua": (0, 255, 255),
    "cyan": (0, 255, 255),
    "fuchsia": (255, 0, 255),
    "magenta": (255, 0, 255),
}
_COLOUR = re.compile(
    r"#[0-9a-f]{3,8}\b|rgba?\([^)]*\)|\btransparent\b|\b(?:" + "|".join(_NAMED_COLOURS) + r")\b",
    re.I,
)
Colour = tuple[float, float, float, float]  # r, g, b (0-255), alpha (0-1)


def _colour(text: str) -> Colour | None:
    match = _COLOUR.search(text or "")
    if not match:
        return None
    value = match.group(0).lower()
    if value == "transparent":
        return (0.0, 0.0, 0.0, 0.0)
    if value in _NAMED_COLOURS:
        r, g, b = _NAMED_COLOURS[value]
        return (float(r), float(g), float(b), 1.0)
    if value.startswith("#"):
        digits = value[1:]
        if len(digits) in (3, 4):
            digits = "".join(c * 2 for c in digits)
        if len(digits) not in (6, 8):
            return None
        alpha = int(digits[6:8], 16) / 255 if len(digits) == 8 else 1.0
        return (
            float(int(digits[0:2], 16)),
            float(int(digits[2:4], 16)),
            float(int(digits[4:6], 16)),
            alpha,
        )
    parts = re.split(r"[\s,/]+", value[value.index("(") + 1 : -1].strip())
    try:
        rgb = [float(p[:-1]) * 2.55 if p.endswith("%") else float(p) for p in parts[:3]]
        alpha = 1.0
        if len(parts) > 3:
            alpha = float(parts[3][:-1]) / 100 if parts[3].endswith("%") else float(parts[3])
    except ValueError:
        return None
    if len(rgb) != 3:
        return None
    return (rgb[0], rgb[1], rgb[2], max(0.0, min(1.0, alpha)))


def _over(top: Colour, bottom: Colour) -> Colour:
    a = top[3]
    return (
        top[0] * a + bottom[0] * (1 - a),
        top[1] * a + bottom[1] * (1 - a),
        top[2] * a + bottom[2] * (1 - a),
        1.0,
    )


def _luminance(c: Colour) -> float:
    def channel(v: float) -> float:
        s = v / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(c[0]) + 0.7152 * channel(c[1]) + 0.0722 * channel(c[2])


def contrast_ratio(fg: Colour, bg: Colour) -> float:
    """WCAG 2 contrast ratio of two opaque colours (1 to 21)."""
    lighter, darker = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def _hex(c: Colour) -> str:
    return "#" + "".join(f"{round(v):02x}" for v in c[:3])


WHITE: Colour = (255.0, 255.0, 255.0, 1.0)
BLACK: Colour = (0.0, 0.0, 0.0, 1.0)


def _contrast(doc: Any, origins: _Origins, styles: _Styles) -> list[Finding]:
    findings: list[Finding] = []
    for el in doc.iter():
        if not isinstance(el.tag, str) or el.tag.lower() in ("style", "script", "title", "head"):
            continue
        text = (el.text or "") + "".join(c.tail or "" for c in el)
        if not text.strip() or SLOT_RE.fullmatch(text.strip()) or styles.hidden(el):
            continue
        colour, carrier = _inherited(el, styles, _text_colour)
        background = _background(el, styles)
        fg = _over(colour or BLACK, background)
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
                f"{size} colour {_hex(fg)} on {_hex(background)}: contrast {ratio:.2f}:1, "
                f"WCAG AA needs {needed:g}:1",
                origin,
            )
        )
    return findings


def _text_colour(el: Any, styles: _Styles) -> Colour | None:
    colour = styles.of(el).get("color")
    if colour is None and el.tag.lower() == "font":
        colour = el.get("color")
    return _colour(colour) if colour else None


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
        found = _colour(value) if value else None
        if found is not None and found[3] > 0:
            layers.append(found)
            if found[3] >= 1:
                break
    result = WHITE
    for layer in reversed(layers):
        result = _over(layer, result)
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


# -- links ------------------------------------------------------------------------------------

EMAIL_SCHEMES = frozenset({"http", "https", "mailto", "tel"})
# The issue's notices about links (mailer.compose.issue): passed through, with these severities.
LINK_NOTICES = {
    "scheme": Severity.ERROR,
    "empty-link": Severity.ERROR,
    "relative": Severity.ERROR,
    "liquid": Severity.ERROR,
    "http": Severity.WARNING,
    "reference": Severity.WARNING,
}


def _links(doc: Any, email: Email, origins: _Origins) -> list[Finding]:
    findings: list[Finding] = []
    for a in doc.iter("a"):
        href = a.get("href")
        if href is None or SLOT_RE.search(href):
            continue  # no link, or a per-reader value filled at send time
        found = _link_problem(href.strip())
        if found is not None:
            severity, code, message = found
            findings.append(Finding(Section.LINKS, severity, code, message, origins.link(a)))
    own = {(f.code, f.origin.line) for f in findings if f.origin.kind == OriginKind.ISSUE}
    for notice in email.notices:
        if notice.code in LINK_NOTICES and (notice.code, notice.line) not in own:
            findings.append(
                Finding(
                    Section.LINKS,
                    LINK_NOTICES[notice.code],
                    notice.code,
                    notice.message,
                    origins.in_issue(notice.line),
                )
            )
    return findings


def _link_problem(href: str) -> tuple[Severity, str, str] | None:
    if not href:
        return Severity.ERROR, "empty-link", "link with an empty target"
    try:
        scheme = urlsplit(href).scheme.lower()
    except ValueError:
        return Severity.ERROR, "scheme", f"link that is not a URL: {href}"
    if scheme and scheme not in EMAIL_SCHEMES:
        return (
            Severity.ERROR,
            "scheme",
            f"link with the scheme '{scheme}:' (email links are http, https, mailto or tel): "
            f"{href}",
        )
    if scheme == "http":
        return Severity.WARNING, "http", f"link is not https: {href}"
    if not scheme and not href.startswith("#"):
        return Severity.ERROR, "relative", f"relative link cannot work in an email: {href}"
    return None
