"""The template as written: its rules, declarations, tags and lines, for origins."""

from __future__ import annotations

import html as html_mod
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mailer.compose.render import HTML_TEMPLATE, template_dirs
from mailer.config import Settings
from mailer.lint.css import norm_selector, norm_value

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
class TDecl:
    line: int
    prop: re.Pattern[str]
    value: re.Pattern[str]
    selector: re.Pattern[str] | None = None  # declared in a CSS rule with this selector
    css: str | None = None  # that selector without template expressions, to match elements
    tag: str | None = None  # declared in a style="" attribute of this raw element


@dataclass(frozen=True)
class TTag:
    line: int
    tag: str
    attrs: Mapping[str, str]  # as written (template expressions as _HOLE)
    classes: frozenset[str] = frozenset()
    values: Mapping[str, re.Pattern[str]] = field(default_factory=dict)  # as CSS values
    exact: Mapping[str, re.Pattern[str]] = field(default_factory=dict)  # as written

    @classmethod
    def of(cls, line: int, tag: str, attrs: dict[str, str]) -> TTag:
        classes = frozenset((attrs.get("css-class") or attrs.get("class") or "").split())
        values = {k: _pattern(v, norm_value) for k, v in attrs.items()}
        exact = {k: _pattern(v, str.strip) for k, v in attrs.items()}
        return cls(line, tag, attrs, classes, values, exact)


@dataclass(frozen=True)
class _TemplateFile:
    path: Path
    decls: tuple[TDecl, ...]
    rules: tuple[tuple[int, re.Pattern[str]], ...]  # (line, selector)
    at_rules: tuple[tuple[int, str, re.Pattern[str]], ...]  # (line, name, prelude)
    tags: tuple[TTag, ...]  # raw tags and mj-* components
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

        decls: list[TDecl] = []
        rules: list[tuple[int, re.Pattern[str]]] = []
        for rule in _CSS_RULE.finditer(text):
            prelude = rule.group(1)
            if not prelude.strip() or prelude.strip().startswith("@"):
                continue
            selector = _pattern(prelude, norm_selector, hole="[^,]*")
            css = norm_selector(prelude.replace(_HOLE, " ")).strip()
            first = re.search(r"[^\s\x01]", prelude)
            rules.append((line(rule.start(1) + (first.start() if first else 0)), selector))
            for decl in _CSS_DECL.finditer(rule.group(2)):
                decls.append(
                    TDecl(
                        line(rule.start(2) + decl.start()),
                        _pattern(decl.group(1).lower(), str.strip),
                        _pattern(decl.group(2), norm_value),
                        selector,
                        css,
                    )
                )
        at_rules = tuple(
            (line(m.start()), m.group(1).lower(), _pattern(m.group(2), norm_value))
            for m in _AT_RULE.finditer(text)
        )
        tags: list[TTag] = []
        content_class: str | None = None
        for tag in _TAG.finditer(text):
            name = tag.group(1).lower()
            attrs: dict[str, str] = {}
            for attr in _ATTR.finditer(tag.group(2)):
                raw = attr.group(2) or ""
                attrs.setdefault(attr.group(1).lower(), html_mod.unescape(raw.strip("\"'")))
            written = TTag.of(line(tag.start()), name, attrs)
            tags.append(written)
            if content >= 0 and tag.start() < content and name.startswith("mj-"):
                classes = (attrs.get("css-class") or "").split()
                content_class = classes[0] if classes else None
            style = attrs.get("style")
            if style and not name.startswith("mj"):
                for decl in _CSS_DECL.finditer(style):
                    decls.append(
                        TDecl(
                            line(tag.start()),
                            _pattern(decl.group(1).lower(), str.strip),
                            _pattern(decl.group(2), norm_value),
                            tag=name,
                        )
                    )
        styles = tuple(
            (line(m.start()), line(m.end()), m.group(1) == "style")
            for m in re.finditer(r"<(mj-style|style)\b[^>]*>.*?</\1>", text, re.S)
        )
        return cls(path, tuple(decls), tuple(rules), at_rules, tuple(tags), styles, content_class)


@dataclass(frozen=True)
class Template:
    files: tuple[_TemplateFile, ...]

    @property
    def content_class(self) -> str | None:
        return next((f.content_class for f in self.files if f.content_class), None)

    @classmethod
    def load(cls, settings: Settings) -> Template:
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
