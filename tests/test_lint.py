"""`mailer lint`: client support from caniemail's data, accessibility and links, with origins."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import MailerCli

from mailer import campaign, config
from mailer import lint as lint_mod
from mailer.cli import main
from mailer.compose.render import BUILTIN_TEMPLATES, HTML_TEMPLATE
from mailer.lint import (
    Client,
    ClientSupport,
    Finding,
    Origin,
    OriginKind,
    Report,
    Section,
    Severity,
    Support,
    caniemail,
    colours,
    contrast_ratio,
    fallbacks,
    features,
    lint,
    select_clients,
    summary,
    uses,
)

pytestmark = pytest.mark.slow  # a whole `mailer` command, issue rendered, in every test

PROJECT = Path(__file__).resolve().parents[1]

# An issue with one of each problem; the numbers are its lines in the file.
LINT_ME = """\
---
title: Lint fixture
lang: en
---

The first paragraph says what this issue is about.

![A chart of the results](https://example.org/chart-a.png)

Read the full report [here](https://example.org/report).

<img src="https://example.org/chart.png">

<p style="color:#aaaaaa">This sentence is too pale to read.</p>

<div style="display:flex">
<p>Two columns in browsers, one in Outlook.</p>
</div>

See [the paper](ttps://example.org/paper) for details.
"""
VAGUE_LINE, NO_ALT_LINE, PALE_LINE, FLEX_LINE, SCHEME_LINE = 10, 12, 14, 16, 20

# An issue with nothing to fix, using what the template styles: an image, a list, a quote,
# code and a table.
CLEAN = """\
---
title: A clean issue
lang: en
---

The first paragraph says what this issue is about, with [the full report](https://example.org/r).

## A section

![A chart of the results](https://example.org/chart-a.png)

- one item
- another [with a link](https://example.org/two)

> A quote from someone.

```
code block
```

| a | b |
|---|---|
| 1 | 2 |

Some `inline code` and **bold** text.
"""


@pytest.fixture
def project(new_project: Callable[..., Path]) -> Path:
    """A project: issues/issue-2.md (the seed), issues/lint-me.md and mailer.toml."""
    root = new_project("email\n", name="project")
    (root / "issues" / "lint-me.md").write_text(LINT_ME, encoding="utf-8")
    return root


def report_for(project: Path, issue: str, clients: str | None = None) -> Report:
    settings = config.load(project, environ={})
    return lint(campaign.load(settings, issue), settings, clients=select_clients(clients))


def at(report: Report, kind: OriginKind) -> set[tuple[str, int | None]]:
    return {(f.code, f.origin.line) for f in report.findings if f.origin.kind == kind}


def support(finding: Finding, key: str) -> ClientSupport:
    return next(s for s in finding.clients if s.client.key == key)


# -- the origin of a client finding: template line, issue line, MJML ----------------------------


def test_custom_template_lines_for_outlook_windows(project: Path, mailer_cli: MailerCli) -> None:
    """display:flex, position:absolute and background-image added to mj-style: their lines."""
    source = (BUILTIN_TEMPLATES / HTML_TEMPLATE).read_text(encoding="utf-8").split("\n")
    at_style = next(i for i, line in enumerate(source) if "<mj-style" in line)
    added = [
        "      .content p { display: flex; }",
        "      .content p { position: absolute; }",
        "      .content p { background-image: url(https://example.org/paper.png); }",
    ]
    source[at_style + 1 : at_style + 1] = added
    (project / "templates").mkdir()
    template = project / "templates" / HTML_TEMPLATE
    template.write_text("\n".join(source), encoding="utf-8")
    flex, position, image = at_style + 2, at_style + 3, at_style + 4  # 1-based lines

    report = report_for(project, "issue-2", clients="outlook.windows")
    added_lines = {flex, position, image}
    found = {
        f.code: f
        for f in report.findings
        if f.origin.path == template.resolve() and f.origin.line in added_lines
    }
    assert {(code, f.origin.line) for code, f in found.items()} == {
        ("css-display", flex),
        ("css-display-flex", flex),
        ("css-position", position),
        ("css-background-image", image),
    }
    assert [c.key for c in report.clients] == ["outlook.windows"]
    assert support(found["css-display-flex"], "outlook.windows").support == Support.UNSUPPORTED
    assert support(found["css-position"], "outlook.windows").support == Support.UNSUPPORTED
    background = support(found["css-background-image"], "outlook.windows")
    assert background.support == Support.UNSUPPORTED
    assert background.notes == (
        "Background images can be used in VML. See [backgrounds.cm](https://backgrounds.cm/) "
        "and [VML documentation](https://docs.microsoft.com/en-us/windows/win32/vml/"
        "web-workshop---how-to-use-vml-on-web-pages-----fill--element).",
    )
    display = support(found["css-display"], "outlook.windows")
    assert display.support == Support.PARTIAL and len(display.notes) == 2
    assert found["css-display-flex"].severity == Severity.ERROR
    assert found["css-display"].severity == Severity.WARNING

    # A template of the project's own is the author's: its errors are printed by default, one
    # line per feature, after the issue's; its partial support (display) waits for --verbose.
    result = mailer_cli(project, "lint", "issue-2", "--client", "outlook.windows")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    name = f"templates/{HTML_TEMPLATE}"
    assert [line for line in lines if line.startswith(name)] == [
        f"{name}:{flex}: error: display:flex — unsupported in Outlook (Windows)",
        f"{name}:{position}: error: position — unsupported in Outlook (Windows)",
        f"{name}:{image}: error: background-image — unsupported in Outlook (Windows)",
    ]
    assert all(line.startswith("issues/issue-2.md:") for line in lines[:7])
    assert lines[-1].startswith("mailer lint issue-2: 10 errors, 17 warnings (1 email client, ")
    assert mailer_cli(project, "lint", "issue-2", "--strict").exit_code == 65
    verbose = mailer_cli(project, "lint", "issue-2", "--client", "outlook.windows", "--verbose")
    assert (
        f"{name}:{image}: error: background-image — unsupported in Outlook (Windows): "
        "Background images can be used in VML."
    ) in verbose.stdout
    assert "template, render and MJML output: " in verbose.stdout


def test_raw_html_in_the_issue_points_at_its_line(project: Path) -> None:
    report = report_for(project, "lint-me")
    issue = (project / "issues" / "lint-me.md").resolve()
    flex = next(f for f in report.findings if f.code == "css-display-flex")
    assert flex.origin == Origin(OriginKind.ISSUE, issue, FLEX_LINE)
    assert [(s.client.key, s.support) for s in flex.clients] == [
        ("gmail.ios", Support.PARTIAL),
        ("gmail.android", Support.PARTIAL),
        ("outlook.windows", Support.UNSUPPORTED),
    ]
    assert flex.url == "https://www.caniemail.com/features/css-display-flex/"
    # The <p> inside that div and the pale <p> are the issue's too; the Markdown
    # paragraphs' margin comes from the template's `.content p` rule.
    assert ("css-display", FLEX_LINE) in at(report, OriginKind.ISSUE)
    assert {line for code, line in at(report, OriginKind.ISSUE) if code == "css-display-flex"} == {
        FLEX_LINE
    }


def test_each_accessibility_and_link_problem_gives_its_finding(project: Path) -> None:
    report = report_for(project, "lint-me")
    issue = (project / "issues" / "lint-me.md").resolve()
    mine = {
        (f.section, f.severity, f.code, f.title, f.origin.line)
        for f in report.findings
        if f.section != Section.CLIENTS and f.origin.path == issue
    }
    assert mine == {
        (
            Section.ACCESSIBILITY,
            Severity.WARNING,
            "vague-link",
            "link text 'here' says nothing out of context: https://example.org/report",
            VAGUE_LINE,
        ),
        (
            Section.ACCESSIBILITY,
            Severity.ERROR,
            "alt",
            'image with empty alt text (say what it shows, or mark it role="presentation"): '
            "https://example.org/chart.png",
            NO_ALT_LINE,
        ),
        (
            Section.ACCESSIBILITY,
            Severity.ERROR,
            "contrast",
            "text colour #aaaaaa on #ffffff: contrast 2.32:1, WCAG AA needs 4.5:1",
            PALE_LINE,
        ),
        (
            Section.LINKS,
            Severity.ERROR,
            "scheme",
            "link with the scheme 'ttps:' (email links are http, https, mailto or tel): "
            "ttps://example.org/paper",
            SCHEME_LINE,
        ),
    }
    # The issue's own "scheme" notice for that line is the same finding: listed once.
    assert [f.code for f in report.of(Section.LINKS)] == ["scheme"]


def hidden(report: Report) -> int:
    """How many findings wait for --verbose."""
    return sum(not report.shown(f) for f in report.findings)


def test_the_issue_s_findings_come_first_and_strict_fails(
    project: Path, mailer_cli: MailerCli
) -> None:
    result = mailer_cli(project, "lint", "lint-me")
    assert result.exit_code == 0, result.output
    more = hidden(report_for(project, "lint-me"))
    assert result.stdout.splitlines() == [
        f"issues/lint-me.md:{VAGUE_LINE}: warning: link text 'here' says nothing out of "
        "context: https://example.org/report",
        f"issues/lint-me.md:{NO_ALT_LINE}: error: image with empty alt text (say what it shows, "
        'or mark it role="presentation"): https://example.org/chart.png',
        f"issues/lint-me.md:{PALE_LINE}: error: text colour #aaaaaa on #ffffff: contrast "
        "2.32:1, WCAG AA needs 4.5:1",
        f"issues/lint-me.md:{SCHEME_LINE}: error: link with the scheme 'ttps:' (email links are "
        "http, https, mailto or tel): ttps://example.org/paper",
        f"issues/lint-me.md:{FLEX_LINE}: error: display:flex — unsupported in Outlook (Windows); "
        "partial in Gmail (iOS), Gmail (Android)",
        "mailer lint lint-me: 4 errors, 1 warning (13 email clients, caniemail.com data of "
        f"2026-05-13; --verbose: {more} more notes)",
    ]
    assert more > 100  # the template's and MJML's, and partial support: not printed

    strict = mailer_cli(project, "lint", "lint-me", "--strict")
    assert strict.exit_code == 65
    assert strict.stdout == result.stdout
    assert strict.stderr == "lint --strict: 4 errors\n"


def test_a_clean_issue_is_one_line_and_passes_strict(project: Path, mailer_cli: MailerCli) -> None:
    (project / "issues" / "clean.md").write_text(CLEAN, encoding="utf-8")
    more = hidden(report_for(project, "clean"))
    line = (
        "mailer lint clean: nothing to fix (13 email clients, caniemail.com data of "
        f"2026-05-13; --verbose: {more} more notes)\n"
    )
    result = mailer_cli(project, "lint", "clean")
    assert (result.exit_code, result.stdout) == (0, line)
    strict = mailer_cli(project, "lint", "clean", "--strict")
    assert (strict.exit_code, strict.stdout, strict.stderr) == (0, line, "")


def test_the_built_in_template_is_clean_at_error_level(project: Path) -> None:
    """Code, a table, lists, a quote, an image: what the template cannot do is by design."""
    (project / "issues" / "clean.md").write_text(CLEAN, encoding="utf-8")
    report = report_for(project, "clean")
    assert report.errors == 0
    assert [f for f in report.findings if report.shown(f)] == []
    # Every listed fallback is used, so the list says what the template really relies on.
    assert {f.code for f in report.findings if f.fallback} == set(fallbacks.FALLBACKS)
    assert {f.origin.kind for f in report.findings if f.fallback} == {
        OriginKind.TEMPLATE,
        OriginKind.MJML,
    }
    # The same feature in the issue's own HTML stays an error: the author chose it.
    flex = report_for(project, "lint-me")
    assert [
        f.code for f in flex.findings if f.section == Section.CLIENTS and f.severity == "error"
    ] == ["css-display-flex"]


def test_verbose_adds_partial_support_and_groups_the_template(
    project: Path, mailer_cli: MailerCli
) -> None:
    quiet = mailer_cli(project, "lint", "lint-me").stdout.splitlines()
    result = mailer_cli(project, "lint", "lint-me", "--verbose")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:5] == [
        *quiet[:4],
        f"issues/lint-me.md:{FLEX_LINE}: error: display:flex — unsupported in Outlook (Windows); "
        "partial in Gmail (iOS), Gmail (Android): Not supported with non Google accounts.",
    ]
    assert lines[5].startswith(f"issues/lint-me.md:{FLEX_LINE}: warning: display — partial in ")
    assert lines[6:] == [
        "built-in template, render and MJML output: 18 designed fallbacks (unsupported "
        "somewhere; --format json says why): <body> element, @media, @media "
        "(prefers-color-scheme), aria-label attribute, Attribute selector, border-radius, "
        "color-scheme CSS property, color-scheme meta tag, cursor, height property, HTML5 "
        "doctype, max-height property, opacity, outline, overflow, target attribute, "
        "word-break, word-spacing",
        "built-in template, render and MJML output: 26 partly supported: !important keyword, "
        "<style> element, align attribute, background, border, Class selector, Descendant "
        "combinator, dir attribute, display, display:none, font-size, font-weight, Grouping "
        "selectors, lang attribute, letter-spacing, line-height, margin, max-width, padding, "
        "role attribute, text-align, text-decoration, text-transform, Type selector, width "
        "attribute, width property",
        "mailer lint lint-me: 4 errors, 1 warning (13 email clients, caniemail.com data of "
        "2026-05-13)",
    ]


def test_json_keeps_every_finding_with_its_origin(project: Path, mailer_cli: MailerCli) -> None:
    as_json = mailer_cli(
        project, "lint", "lint-me", "--format", "json", "--client", "gmail,outlook"
    )
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    report = report_for(project, "lint-me", clients="gmail,outlook")
    assert len(data["findings"]) == len(report.findings) > 100
    assert [c["client"] for c in data["clients"]] == [
        "gmail.desktop-webmail",
        "gmail.ios",
        "gmail.android",
        "outlook.windows",
        "outlook.macos",
        "outlook.outlook-com",
        "outlook.ios",
        "outlook.android",
    ]
    flex = next(f for f in data["findings"] if f["code"] == "css-display-flex")
    assert flex["origin"] == {
        "kind": "issue",
        "path": "issues/lint-me.md",
        "line": FLEX_LINE,
        "shown": f"issues/lint-me.md:{FLEX_LINE}",
    }
    assert flex["severity"] == "error" and flex["section"] == "client support"
    assert flex["fallback"] is None
    assert {c["client"]: c["support"] for c in flex["clients"]} == {
        "gmail.ios": "partial",
        "gmail.android": "partial",
        "outlook.windows": "unsupported",
    }
    mjml = next(f for f in data["findings"] if f["origin"]["kind"] == "mjml")
    assert mjml["origin"] == {"kind": "mjml", "path": None, "line": None, "shown": "MJML output"}
    doctype = next(f for f in data["findings"] if f["code"] == "html-doctype")
    assert (doctype["severity"], doctype["fallback"]) == (
        "warning",
        fallbacks.FALLBACKS["html-doctype"],
    )
    # The render sized both images (the issue wrote ![...](...) and <img src>); MJML its tables.
    widths = {
        (f["origin"]["kind"], f["origin"]["line"])
        for f in data["findings"]
        if f["code"] == "html-width"
    }
    assert widths == {("mjml", None), ("render", 8), ("render", NO_ALT_LINE)}
    assert all(
        c["client"].split(".")[0] in ("gmail", "outlook")
        for f in data["findings"]
        for c in f["clients"]
    )
    assert data["summary"]["links"] == 1 and data["summary"]["accessibility"] == 3
    assert data["summary"]["errors"] == 4
    verbose = mailer_cli(project, "lint", "lint-me", "--format", "json", "-v", "--client", "gmail")
    assert len(json.loads(verbose.stdout)["findings"]) == len(
        report_for(project, "lint-me", "gmail").findings
    )


def test_client_option_is_checked(project: Path, mailer_cli: MailerCli) -> None:
    result = mailer_cli(project, "lint", "issue-2", "--client", "hotmail")
    assert result.exit_code == 2
    assert "unknown client 'hotmail': use gmail, outlook, apple-mail, yahoo" in result.output
    assert [c.key for c in select_clients("apple, yahoo.ios")] == [
        "apple-mail.macos",
        "apple-mail.ios",
        "yahoo.ios",
    ]
    assert select_clients(None) == lint_mod.CLIENTS and len(lint_mod.CLIENTS) == 13


def test_help_teaches() -> None:
    result = CliRunner().invoke(main, ["lint", "--help"])
    assert result.exit_code == 0
    words = ("caniemail.com", "--strict", "Exit 65", "--client", "MJML output", "4.5:1")
    words += ("--verbose", "one summary", "designed fallback", "a clean issue exits 0", "YAML")
    text = " ".join(result.output.split())
    for said in words:
        assert said in text


def test_a_hash_that_cuts_the_title_is_printed_with_its_line(
    project: Path, mailer_cli: MailerCli
) -> None:
    clean = CLEAN.replace("title: A clean issue", "title: Weekly Bits #2: colons")
    (project / "issues" / "bits.md").write_text(clean, encoding="utf-8")
    result = mailer_cli(project, "lint", "bits", "--strict")
    assert result.exit_code == 0, result.output  # a warning: --strict still passes
    assert result.stdout.splitlines()[0] == (
        "issues/bits.md:2: warning: YAML reads '#2: colons' in 'title' as a comment, so the "
        'title is "Weekly Bits": put the value in quotes (title: "Weekly Bits #2: colons")'
    )
    assert result.stdout.splitlines()[1].startswith("mailer lint bits: 1 warning (13 email")
    data = json.loads(mailer_cli(project, "lint", "bits", "--format", "json").stdout)
    assert data["summary"]["front_matter"] == 1


def test_missing_issue_is_an_input_error(project: Path, mailer_cli: MailerCli) -> None:
    result = mailer_cli(project, "lint", "nope")
    assert result.exit_code == 65
    assert "no issue 'nope'" in result.output


# -- the pieces ---------------------------------------------------------------------------------


def test_data_is_every_feature_with_its_source() -> None:
    data = caniemail()
    assert len(data.features) == 307
    assert data.last_update == "2026-05-13 14:45:41 +0000"
    assert data.source == "caniemail@2.0.2 (npm)"
    radius = data.features["css-border-radius"]
    outlook = Client("outlook.windows", "Outlook (Windows)")
    assert radius.stats["outlook.windows"] == ("2019", "n #1")
    found = radius.support(outlook)
    assert found is not None and found.support == Support.UNSUPPORTED and found.version == "2019"
    assert found.notes[0].startswith("Round corners can be used in VML")
    # "u" (unknown) and missing platforms are not findings
    assert data.features["css-word-wrap"].support(Client("gmail.ios", "Gmail (iOS)")) is None
    raw = json.loads((PROJECT / "mailer" / "data" / "caniemail.json").read_text("utf-8"))
    assert raw["source"]["licence"] == "MIT"
    assert all(len(v) == 1 for f in raw["data"] for p in f["stats"].values() for v in p.values())


def test_titles_map_to_features() -> None:
    m = features.matchers()
    slugs = uses.property_slugs
    assert slugs(m, "border-top-left-radius", "4px", False) == ["css-border-radius", "css-unit-px"]
    assert slugs(m, "display", "flex !important", True) == [
        "css-display",
        "css-display-flex",
        "css-important",
    ]
    assert slugs(m, "color", "oklch(70% 0.1 200)", False) == [
        "css-modern-color",
        "css-unit-percent",
    ]
    assert slugs(m, "width", "calc(100% - 2rem)", False) == [
        "css-width",
        "css-unit-calc",
        "css-unit-percent",
        "css-unit-rem",
    ]
    assert slugs(m, "background", "url('a.webp')", False) == ["css-background", "image-webp"]
    assert sorted(uses.selector_slugs(m, "[data-ogsc] .a.b > p:hover, li")) == [
        "css-pseudo-class-hover",
        "css-selector-attribute",
        "css-selector-chaining",
        "css-selector-child",
        "css-selector-class",
        "css-selector-descendant",
        "css-selector-grouping",
        "css-selector-type",
    ]
    assert uses.media_slugs(m, "(prefers-color-scheme: dark)") == [
        "css-at-media-prefers-color-scheme"
    ]
    assert uses.media_slugs(m, "(-webkit-min-device-pixel-ratio: 2)") == [
        "css-at-media-device-pixel-ratio"
    ]
    assert m.elements["h4"] == ["html-h1-h6"] and m.elements["dl"] == ["html-lists"]
    assert m.elements["svg"] == ["html-svg"] and m.attributes["inert"] == ["css-inert-attribute"]


def test_contrast_ratio() -> None:
    white, black = colours.WHITE, colours.BLACK
    assert contrast_ratio(black, white) == pytest.approx(21)
    assert contrast_ratio((170, 170, 170, 1), white) == pytest.approx(2.32, abs=0.005)
    assert colours.read_colour("#0b62d6") == (11, 98, 214, 1.0)
    assert colours.read_colour("rgba(0, 0, 0, 0.5)") == (0, 0, 0, 0.5)
    assert colours.read_colour("transparent") == (0, 0, 0, 0)


def test_summary_line_for_build() -> None:
    """What `mailer lint` prints by default, counted: errors, and the issue's other warnings."""
    gmail = Client("gmail.ios", "Gmail (iOS)")
    outlook = Client("outlook.windows", "Outlook (Windows)")
    mjml, issue = Origin(OriginKind.MJML), Origin(OriginKind.ISSUE, PROJECT / "x.md", 3)

    def client(code: str, severity: Severity, where: Origin, *clients: Client) -> Finding:
        found = tuple(ClientSupport(c, Support.PARTIAL, "2020") for c in clients)
        return Finding(Section.CLIENTS, severity, code, code, where, found)

    partial = (
        client("css-a", Severity.WARNING, mjml, outlook),
        client("css-b", Severity.WARNING, issue, outlook, gmail),
        Finding(Section.ACCESSIBILITY, Severity.WARNING, "h1", "no h1", mjml),
    )
    findings = (
        *partial,
        client("css-c", Severity.ERROR, mjml, outlook),
        Finding(Section.ACCESSIBILITY, Severity.ERROR, "alt", "no alt", issue),
        Finding(Section.LINKS, Severity.WARNING, "http", "http", issue),
    )
    report = Report("issue-2", PROJECT, findings, lint_mod.CLIENTS, "2026-05-13", "caniemail")
    assert summary(report) == "lint: 2 errors, 1 warning — mailer lint issue-2 to see them"
    assert report.errors == 2
    quiet = Report("issue-2", PROJECT, partial, lint_mod.CLIENTS, "2026-05-13", "caniemail")
    assert summary(quiet) == "lint: nothing to fix for 13 email clients"
    empty = Report("issue-2", PROJECT, (), lint_mod.CLIENTS[:1], "2026-05-13", "caniemail")
    assert summary(empty) == "lint: nothing to fix for 1 email client"


# -- the default template on the seed ------------------------------------------------------------

# What the default template (with the seed issue) uses that some client supports only in part or
# not at all. docs/email-clients.md says why each is acceptable. A template change that uses a new
# such feature fails here: add it to this set, and to that page with its reason, or drop it.
DEFAULT_TEMPLATE_FEATURES = {
    # unsupported in at least one client
    "css-at-media",  # MJML's mobile columns and the dark-mode query: ignored by Outlook (Windows)
    "css-at-media-prefers-color-scheme",  # dark mode where it exists; light elsewhere
    "css-cursor",  # MJML's buttons
    "html-target",  # MJML's buttons open in a new tab
    "css-border-radius",  # rounded card corners; square in Outlook (Windows)
    "css-color-scheme",  # dark-mode opt-in; ignored where unsupported
    "css-height",  # img height:auto (Yahoo renames it min-height: harmless)
    "css-max-height",  # MJML's hidden preheader
    "css-opacity",  # MJML's hidden preheader
    "css-outline",  # MJML's img outline:none
    "css-overflow",  # MJML's hidden preheader
    "css-selector-attribute",  # Outlook.com dark mode ([data-ogsc]); in its own <style>
    "css-word-break",  # MJML's mj-text cells
    "css-word-spacing",  # MJML's body reset
    "html-aria-label",  # MJML's wrapper (the subject, for screen readers)
    "html-body",  # every email has one
    "html-doctype",  # MJML's <!doctype html>
    "html-meta-color-scheme",  # dark-mode opt-in
    # partial support only
    "css-background",
    "css-border",
    "css-display",
    "css-display-none",
    "css-font-size",
    "css-font-weight",
    "css-important",
    "css-letter-spacing",  # the masthead's small capitals
    "css-text-transform",  # the masthead's dateline
    "css-line-height",
    "css-margin",
    "css-max-width",
    "css-padding",
    "css-selector-class",
    "css-selector-descendant",
    "css-selector-grouping",
    "css-selector-type",
    "css-text-align",
    "css-text-decoration",
    "css-width",
    "html-align",
    "html-dir",
    "html-lang",
    "html-role",
    "html-style",
    "html-width",
    "image-gif",  # the seed's one animated GIF (line 123): Outlook (Windows) shows frame one
}


def test_default_template_on_the_seed(project: Path) -> None:
    report = report_for(project, "issue-2")
    clients = report.of(Section.CLIENTS)
    assert {f.code for f in clients} == DEFAULT_TEMPLATE_FEATURES
    # What is unsupported somewhere is a fallback the template is designed around: a warning
    # with its reason, never an error, so `--strict` can gate on the issue alone.
    designed = {
        "css-at-media",
        "css-at-media-prefers-color-scheme",
        "css-cursor",
        "html-target",
        "css-border-radius",
        "css-color-scheme",
        "css-height",
        "css-max-height",
        "css-opacity",
        "css-outline",
        "css-overflow",
        "css-selector-attribute",
        "css-word-break",
        "css-word-spacing",
        "html-aria-label",
        "html-body",
        "html-doctype",
        "html-meta-color-scheme",
    }
    assert {f.code for f in clients if f.fallback} == designed
    assert all(f.fallback == fallbacks.FALLBACKS[f.code] for f in clients if f.fallback)
    assert [f for f in clients if f.severity == Severity.ERROR] == []
    assert {f.origin.kind for f in clients if f.fallback} == {OriginKind.TEMPLATE, OriginKind.MJML}
    # The images' width and max-width are the render's (for Outlook), at each image's line.
    images = [14, 28, 46, 83, 112, 123, 198]
    render = sorted((f.code, f.origin.line) for f in clients if f.origin.kind == OriginKind.RENDER)
    assert render == sorted(
        (code, n) for n in images for code in ("css-max-width", "css-width", "html-width")
    )
    # The seed's own: its seven images have empty alt text, sixteen links say "here" or
    # "source", one link is http://. The template adds no accessibility or link finding.
    vague = [25, 25, 30, 48, 85, 103, 109, 114, 125, 149, 192, 192, 200, 227, 239, 239]
    found = [(f.code, f.origin.line) for f in report.findings if f.section != Section.CLIENTS]
    assert sorted(found, key=str) == sorted(
        [("alt", n) for n in images] + [("vague-link", n) for n in vague] + [("http", 239)],
        key=str,
    )
    assert all(f.origin.kind == OriginKind.ISSUE for f in report.findings if f.code == "alt")
    gif = next(f for f in clients if f.code == "image-gif")
    assert gif.origin.line == 123 and gif.origin.path is not None
    assert gif.origin.path.name == "issue-2.md"


def test_the_seed_fits_a_screen(project: Path, mailer_cli: MailerCli) -> None:
    """The bundled issue: its 24 findings in line order, then the summary; nothing else."""
    lines = mailer_cli(project, "lint", "issue-2").stdout.splitlines()
    assert len(lines) == 25
    assert all(line.startswith("issues/issue-2.md:") for line in lines[:24])
    numbers = [int(line.split(":")[1]) for line in lines[:24]]
    assert numbers == sorted(numbers) and numbers[0] == 14 and numbers[-1] == 239
    assert sum(": error: image with empty alt text" in line for line in lines) == 7
    assert lines[-1].startswith("mailer lint issue-2: 7 errors, 17 warnings (13 email clients, ")
