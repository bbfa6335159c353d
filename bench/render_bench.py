"""(a) Where a render of issue-2 spends its time; (b) premailer vs css-inline on MJML's output."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import ISSUE, MAILER, mailer_env, median, run_process, timed

# The stages of mailer.compose.render.render, by the module-level function that does each. They are
# wrapped while render() runs, so the figures are those of the real pipeline, not a copy of it.
STAGES = ("_html_body", "_render_template", "compile_mjml", "inline_css", "render_plain")


@dataclass
class RenderFigures:
    runs: int
    parse: float  # issue.read, seconds (median)
    stages: dict[str, float]  # label -> seconds (median), "n/a" labels absent
    total: float  # render(), seconds (median)
    lint: float  # lint.lint() on the rendered email, seconds (median, warm)
    cold_build: float  # `mailer build` as a process, seconds (median of 5)
    cold_runs: list[float]
    mjml_html: str  # MJML's output, input of the inliner comparison
    missing: list[str] = field(default_factory=list)


def _settings(project: Path) -> Any:
    from mailer import config

    return config.load(project, environ={"MAILER_SECRET": "bench"})


def bench_render(project: Path, runs: int = 20) -> RenderFigures:
    from mailer.compose import issue as issue_mod
    from mailer.compose import load
    from mailer.compose import render as render_mod

    settings = _settings(project)
    path = load.resolve(ISSUE, project)

    def read() -> Any:
        return issue_mod.read(path, default_lang=settings.lang, base_url=settings.base_url)

    parse = median(timed(read, runs))
    issue = read()

    calls: dict[str, list[float]] = defaultdict(list)
    captured: dict[str, str] = {}
    originals: dict[str, Callable[..., Any]] = {}
    missing = [name for name in STAGES if not callable(getattr(render_mod, name, None))]

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            elapsed = time.perf_counter() - start
            label = name
            if name == "_render_template":  # (env, template name, context)
                label = "jinja_text" if args[1] == render_mod.TEXT_TEMPLATE else "jinja_html"
            calls[label].append(elapsed)
            if name == "inline_css":
                captured["mjml_html"] = args[0]
            return result

        return timed_call

    for name in STAGES:
        if name not in missing:
            originals[name] = getattr(render_mod, name)
            setattr(render_mod, name, wrap(name, originals[name]))
    totals = []
    try:
        render_mod.render(issue, settings)  # warm-up: imports, first template compile
        calls.clear()
        for _ in range(runs):
            start = time.perf_counter()
            render_mod.render(issue, settings)
            totals.append(time.perf_counter() - start)
    finally:
        for name, fn in originals.items():
            setattr(render_mod, name, fn)

    def per_render(*labels: str) -> float | None:
        if not all(calls.get(label) for label in labels):
            return None
        return median([sum(calls[label][i] for label in labels) for i in range(runs)])

    stages = {
        "template: Markdown -> HTML body (markdown-it)": per_render("_html_body"),
        "template: Jinja -> MJML source": per_render("jinja_html"),
        "MJML -> HTML (mjml-python)": per_render("compile_mjml"),
        "inline CSS (premailer)": per_render("inline_css"),
        "text: tokens -> text + Jinja": per_render("render_plain", "jinja_text"),
    }
    from mailer import lint as lint_mod

    email = render_mod.render(issue, settings)
    lint_s = median(timed(lambda: lint_mod.lint(email, settings), runs))
    mjml_html = captured.get("mjml_html") or render_mod.compile_mjml(
        _mjml_source(render_mod, issue, settings)
    )

    cold = []
    env = mailer_env(project / ".mailer-bench")
    for _ in range(5):
        run = run_process([MAILER, "build", ISSUE], cwd=project, env=env)
        if run.returncode != 0:
            raise RuntimeError(f"mailer build failed: {run.stderr[-2000:]}")
        cold.append(run.wall)
    return RenderFigures(
        runs=runs,
        parse=parse,
        stages={k: v for k, v in stages.items() if v is not None},
        total=median(totals),
        lint=lint_s,
        cold_build=median(cold),
        cold_runs=cold,
        mjml_html=mjml_html,
        missing=missing,
    )


def _mjml_source(render_mod: Any, issue: Any, settings: Any) -> str:
    """Fallback if inline_css could not be wrapped: capture compile_mjml's input instead."""
    seen: list[str] = []
    original = render_mod.compile_mjml

    def spy(source: str) -> str:
        seen.append(source)
        return original(source)

    render_mod.compile_mjml = spy
    try:
        render_mod.render(issue, settings)
    finally:
        render_mod.compile_mjml = original
    return seen[0]


# -- (b) inliners ----------------------------------------------------------------------------


@dataclass
class InlinerFigures:
    premailer_s: float
    css_inline_s: float
    elements: int  # elements compared one by one (paired by tag sequence)
    unpaired: int  # elements only one output has (premailer drops <style> blocks it inlined)
    styled_premailer: int
    styled_css_inline: int
    style_differs: int  # elements whose normalised style attribute differs
    style_differs_semantic: int  # ... still, once 0px/0pt = 0 and case are equated
    examples: list[str]
    media_in: int  # @media rules in MJML's <style> blocks
    media_premailer: int
    media_css_inline: int
    media_premailer_same: bool  # the @media rules' text unchanged (whitespace aside)
    media_css_inline_same: bool
    media_important: tuple[int, int, int]  # !important inside @media: MJML, premailer, css-inline
    style_tags: int  # <style> elements (outside conditional comments)
    style_tags_premailer: int
    style_tags_css_inline: int
    img_total: int
    img_width_altered_premailer: int
    img_width_altered_css_inline: int
    other_attr_diffs_premailer: list[str]  # non-style attributes added/changed/removed vs MJML's
    other_attr_diffs_css_inline: list[str]
    important_premailer: int  # !important inside style attributes
    important_css_inline: int
    bytes_premailer: int
    bytes_css_inline: int
    css_inline_version: str
    premailer_version: str


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _norm_style(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(sorted(d for d in (re.sub(r"\s+", "", part) for part in value.split(";")) if d))


def _style_tags(html: str) -> int:
    return sum(1 for e in _elements(html) if e.tag == "style")


def _elements(html: str) -> list[Any]:
    import lxml.html

    doc = lxml.html.document_fromstring(html)
    # html5ever (css-inline) adds <tbody> where the HTML5 parsing rules say so; lxml does not.
    return [el for el in doc.iter() if isinstance(el.tag, str) and el.tag != "tbody"]


def _media_blocks(html: str) -> list[str]:
    """Each @media rule in the <style> blocks, whitespace removed, for comparison."""
    blocks = []
    for css in re.findall(r"<style\b[^>]*>(.*?)</style>", html, re.S | re.I):
        for m in re.finditer(r"@media\b", css, re.I):
            depth, i = 0, css.index("{", m.start())
            for j in range(i, len(css)):
                depth += {"{": 1, "}": -1}.get(css[j], 0)
                if depth == 0:
                    blocks.append(re.sub(r"\s+", "", css[m.start() : j + 1]))
                    break
    return blocks


def _pairs(a: list[Any], b: list[Any]) -> list[tuple[Any, Any]]:
    """Elements of two parses paired up by their tag sequence (identical sequences: one to one)."""
    import difflib

    tags_a, tags_b = [e.tag for e in a], [e.tag for e in b]
    if tags_a == tags_b:
        return list(zip(a, b, strict=True))
    matcher = difflib.SequenceMatcher(a=tags_a, b=tags_b, autojunk=False)
    return [
        (a[i + k], b[j + k]) for i, j, size in matcher.get_matching_blocks() for k in range(size)
    ]


def _attr_diffs(before: list[Any], after: list[Any]) -> list[str]:
    """Non-style attributes added, changed or removed, over elements paired by _pairs."""
    out = []
    for a, b in _pairs(before, after):
        if a.tag == "style":  # counted apart: premailer drops the <style> blocks it inlined
            continue
        for k in sorted((set(a.attrib) | set(b.attrib)) - {"style"}):
            if a.get(k) != b.get(k):
                out.append(f"<{a.tag} {k}>: {a.get(k)!r} -> {b.get(k)!r}")
    return out


def _img_width_altered(before: list[Any], after: list[Any]) -> tuple[int, int]:
    imgs_before = [el for el in before if el.tag == "img"]
    imgs_after = [el for el in after if el.tag == "img"]
    altered = sum(
        1 for a, b in zip(imgs_before, imgs_after, strict=False) if a.get("width") != b.get("width")
    )
    return len(imgs_before), altered + abs(len(imgs_before) - len(imgs_after))


_ZERO = re.compile(r"(?<![\d.])0(?:px|pt|em|rem|%)(?![\w%])")


_HEX3 = re.compile(r"#([0-9a-f])([0-9a-f])([0-9a-f])\b")


def _semantic(decls: tuple[str, ...]) -> tuple[str, ...]:
    """Also equate equivalent spellings: 0px/0pt = 0, #fff = #ffffff, case."""
    return tuple(sorted(_HEX3.sub(r"#\1\1\2\2\3\3", _ZERO.sub("0", d).lower()) for d in decls))


def bench_inliners(mjml_html: str, runs: int = 20) -> InlinerFigures:
    import css_inline

    from mailer.compose.render import inline_css

    inliner = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)
    premailer_s = median(timed(lambda: inline_css(mjml_html), runs))
    css_inline_s = median(timed(lambda: inliner.inline(mjml_html), runs * 5))
    by_premailer = inline_css(mjml_html)
    by_css_inline = inliner.inline(mjml_html)

    source_els, p_els, c_els = (
        _elements(mjml_html),
        _elements(by_premailer),
        _elements(by_css_inline),
    )
    pairs = _pairs(p_els, c_els)
    unpaired = len(p_els) + len(c_els) - 2 * len(pairs)
    differs, semantic, examples = 0, 0, []
    for p, c in pairs:
        sp, sc = _norm_style(p.get("style")), _norm_style(c.get("style"))
        if sp != sc:
            differs += 1
            semantic += _semantic(sp) != _semantic(sc)
            only_p, only_c = sorted(set(sp) - set(sc)), sorted(set(sc) - set(sp))
            example = f"premailer `{'; '.join(only_p[:2])}` vs css-inline `{'; '.join(only_c[:2])}`"
            if example not in examples and len(examples) < 3:
                examples.append(example)
    media_in = _media_blocks(mjml_html)
    img_total, img_p = _img_width_altered(source_els, p_els)
    _, img_c = _img_width_altered(source_els, c_els)
    return InlinerFigures(
        premailer_s=premailer_s,
        css_inline_s=css_inline_s,
        elements=len(pairs),
        unpaired=unpaired,
        styled_premailer=sum(1 for e in p_els if e.get("style")),
        styled_css_inline=sum(1 for e in c_els if e.get("style")),
        style_differs=differs,
        style_differs_semantic=semantic,
        examples=examples,
        media_in=len(media_in),
        media_premailer=len(_media_blocks(by_premailer)),
        media_css_inline=len(_media_blocks(by_css_inline)),
        media_premailer_same=_media_blocks(by_premailer) == media_in,
        media_css_inline_same=_media_blocks(by_css_inline) == media_in,
        media_important=tuple(
            "".join(_media_blocks(h)).count("!important")
            for h in (mjml_html, by_premailer, by_css_inline)
        ),
        style_tags=_style_tags(mjml_html),
        style_tags_premailer=_style_tags(by_premailer),
        style_tags_css_inline=_style_tags(by_css_inline),
        img_total=img_total,
        img_width_altered_premailer=img_p,
        img_width_altered_css_inline=img_c,
        other_attr_diffs_premailer=_attr_diffs(source_els, p_els),
        other_attr_diffs_css_inline=_attr_diffs(source_els, c_els),
        important_premailer=sum((e.get("style") or "").count("!important") for e in p_els),
        important_css_inline=sum((e.get("style") or "").count("!important") for e in c_els),
        bytes_premailer=len(by_premailer.encode()),
        bytes_css_inline=len(by_css_inline.encode()),
        css_inline_version=_version("css-inline"),
        premailer_version=_version("premailer"),
    )
