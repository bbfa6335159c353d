"""Fenced code with a language: coloured inline (Pygments), readable light and dark, verbatim.

The colours are checked on the built email itself: every span in a highlighted block against
the block's background (WCAG's 4.5:1), in Chromium with the email's light and dark styles,
and the block at phone width keeps its lines.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import html as lxml_html

from mailer import config
from mailer.compose import highlight
from mailer.compose.htmlfix import minify
from mailer.compose.issue import read
from mailer.compose.render import render
from mailer.lint.colours import contrast_ratio, read_colour

CODE = (
    "def greet(name: str) -> str:\n"
    "    # a comment, <b>not bold</b> & not an entity: &amp;\n"
    '    return f"Hello {name}, a string long enough to need wrapping on a phone screen"\n'
    "\n"
    "\tprint(greet('{{ subscriber.name }}'))  # tab, and a field that is only code\n"
)
ISSUE = f"""---
title: Code
---

Highlighted:

```python
{CODE}```

An unknown language:

```no-such-language
plain <text> & {{{{ subscriber.name }}}}
```

No language:

```
just text
```
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("code")
    (root / "issues").mkdir()
    path = root / "issues" / "code.md"
    path.write_text(ISSUE, encoding="utf-8")
    settings = config.load(root, environ={})
    issue = read(path)
    return issue, render(issue, settings)


def _pres(html: str) -> list:
    return lxml_html.fromstring(html).xpath("//pre")


def _style(element) -> dict[str, str]:
    pairs = (d.split(":", 1) for d in (element.get("style") or "").split(";") if ":" in d)
    return {k.strip().lower(): v.strip().lower() for k, v in pairs}


def test_a_known_language_is_coloured_inline_and_verbatim(built) -> None:
    _, email = built
    pre = _pres(email.html)[0]
    assert pre.text_content() == CODE  # every character, tabs and blank lines kept
    spans = pre.xpath(".//span")
    assert len(spans) >= 8
    # Colours only: no class to depend on, no bold or italic.
    for span in spans:
        assert set(_style(span)) == {"color"}, span.get("style")
        assert span.get("class") is None
    assert {_style(s)["color"] for s in spans} <= highlight.palette()
    assert len({_style(s)["color"] for s in spans}) >= 4  # keywords, names, strings, comments
    style = _style(pre)
    assert style["background"] == highlight.BACKGROUND
    assert style["color"] == highlight.FOREGROUND
    assert style["white-space"] == "pre-wrap"
    # The code's markup-looking text stays text, and the field in it stays as written.
    assert "&lt;b&gt;not bold&lt;/b&gt; &amp; not an entity: &amp;amp;" in email.html
    assert "'{{ subscriber.name }}'" in pre.text_content()


def test_every_colour_keeps_4_5_to_1_on_the_block(built) -> None:
    background = read_colour(highlight.BACKGROUND)
    low = {
        colour: round(contrast_ratio(read_colour(colour), background), 2)
        for colour in highlight.palette()
        if contrast_ratio(read_colour(colour), background) < 4.5
    }
    assert low == {}


def test_unknown_language_and_no_language_stay_plain(built) -> None:
    issue, email = built
    unknown, bare = _pres(email.html)[1:]
    for pre, text in ((unknown, "plain <text> & {{ subscriber.name }}\n"), (bare, "just text\n")):
        assert pre.text_content() == text
        assert pre.xpath(".//span") == []
        assert _style(pre)["background"] == "#f3f4f6"  # the template's own code style
    assert unknown.xpath("./code/@class") == ["language-no-such-language"]
    assert [n for n in email.notices if n.code != "lang"] == []  # no error, nothing to fix
    assert issue.fields == []  # merge-field syntax inside code is code


def test_the_text_part_has_the_code_verbatim(built) -> None:
    _, email = built
    lines = ["    " + line if line else "" for line in CODE.rstrip("\n").split("\n")]
    assert "\n".join(lines) in email.text.replace("    \n", "\n")
    assert "<span" not in email.text and "&amp;amp;" not in email.text


def test_line_breaks_survive_minifying(built) -> None:
    _, email = built
    assert _pres(minify(email.html))[0].text_content() == CODE


def test_highlight_alone() -> None:
    assert highlight.highlight("x = 1\n", "") is None
    assert highlight.highlight("x = 1\n", "klingon") is None
    coloured = highlight.highlight("x = 1\n", "Python title=example.py")
    assert coloured is not None and coloured.startswith('<pre style="background:#0d1117;')
    assert lxml_html.fromstring(coloured).text_content() == "x = 1\n"
    assert highlight.language("{.ruby}") == "ruby"


# -- in a browser: light and dark mode, and a phone's width ----------------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_contrast_and_line_breaks_in_chromium(browser, built, tmp_path: Path, scheme) -> None:
    _, email = built
    page_file = tmp_path / "email.html"
    page_file.write_text(email.html, encoding="utf-8")
    context = browser.new_context(viewport={"width": 375, "height": 812}, color_scheme=scheme)
    page = context.new_page()
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())
    page.goto(page_file.as_uri())
    measured = page.evaluate(
        """() => {
        const pre = document.querySelector('pre');
        const line = parseFloat(getComputedStyle(pre).lineHeight);
        const pad = parseFloat(getComputedStyle(pre).paddingTop)
          + parseFloat(getComputedStyle(pre).paddingBottom);
        return {
          background: getComputedStyle(pre).backgroundColor,
          whiteSpace: getComputedStyle(pre).whiteSpace,
          colours: [...pre.querySelectorAll('span')].map(s => getComputedStyle(s).color),
          text: getComputedStyle(pre).color,
          rows: Math.round((pre.clientHeight - pad) / line),
          overflow: pre.scrollWidth - pre.clientWidth,
        };
    }"""
    )
    context.close()
    background = read_colour(measured["background"])
    assert background is not None and background[3] == 1
    ratios = [
        contrast_ratio(read_colour(c), background) for c in [measured["text"], *measured["colours"]]
    ]
    assert min(ratios) >= 4.5, (scheme, measured)
    assert measured["whiteSpace"] == "pre-wrap"
    assert measured["overflow"] <= 0  # wrapped, not scrolled sideways
    assert measured["rows"] > CODE.count("\n")  # every line, and the long one wrapped
