"""Who is responsible for a finding: the template, the issue's own text, the render, or MJML.

A finding names where the thing was written: the template file and line (a rule or
declaration in mj-style or a raw <style>, an mj-* attribute MJML turns into CSS such as
border-radius or background-color, a raw tag), the issue file and line (raw HTML in the
Markdown, or the Markdown element itself), the issue line as "render" when mailer's render
wrote it on an element of the issue (an image's width and max-width: the author wrote only
the image), or "MJML output" when MJML wrote it (its mso-conditional tables, its @media
rules, its default styles). Every check asks Origins; this module is the one place that
decides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import tinycss2  # type: ignore[import-untyped]
from cssselect import SelectorError
from lxml.cssselect import CSSSelector  # type: ignore[import-untyped]

from mailer.lint.css import norm_selector, norm_value
from mailer.lint.issue_source import IssueSource
from mailer.lint.report import Origin, OriginKind
from mailer.lint.template_source import TDecl, Template, TTag
from mailer.lint.uses import Use

MJML_OUTPUT = Origin(OriginKind.MJML)

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
# What Markdown itself can say about an element; the render adds the rest (an image's width).
_MARKDOWN_ATTRIBUTES = frozenset({"src", "alt", "title", "href"})
# Elements MJML writes for a component of the template.
_MJ_ELEMENTS = {"html": "mjml", "body": "mj-body", "title": "mj-title", "head": "mj-head"}


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


class Origins:
    """Find, for each use, the template or issue line that wrote it."""

    def __init__(self, doc: Any, template: Template, issue: IssueSource) -> None:
        self.doc = doc
        self.template = template
        self.issue = issue
        self._matched: dict[str, frozenset[Any]] = {}
        # (template file, property, normalised value) -> its rule declarations that could be it
        self._written: dict[tuple[int, str, str], list[TDecl]] = {}
        self._styles: dict[Any, Origin] = {}
        self._used_styles: set[tuple[Path, int]] = set()

    def of(self, use: Use) -> Origin:
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

    def by_render(self, line: int | None) -> Origin:
        """What the render wrote on the issue's element at this line."""
        return Origin(OriginKind.RENDER, self.issue.path, line)

    def whole_template(self) -> Origin:
        """What the email as a whole lacks: the template's main file, or MJML's output."""
        template = self.template.files[0].path if self.template.files else None
        return Origin(OriginKind.TEMPLATE, template) if template else MJML_OUTPUT

    def inline(self, el: Any, prop: str, value: str) -> Origin:
        """A style attribute's declaration: raw HTML, mj-style rule, MJML, mj-* attribute."""
        plain = norm_value(value)
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
            return self.by_render(own.line)  # not in the issue's style="": image sizes
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

    def _pick(self, tags: list[TTag], el: Any) -> TTag:
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
        plain, sel = norm_value(value), norm_selector(selector)
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
        sel = norm_selector(selector)
        for f in self.template.files:
            for line, pattern in f.rules:
                if pattern.fullmatch(sel):
                    return Origin(OriginKind.TEMPLATE, f.path, line)
        return MJML_OUTPUT

    def at_rule(self, name: str, prelude: str) -> Origin:
        plain = norm_value(prelude)
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
            written = name in (own.attrs if own.raw else _MARKDOWN_ATTRIBUTES)
            return self.in_issue(own.line) if written else self.by_render(own.line)
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
