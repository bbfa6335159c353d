"""`mailer import-posts`: a Substack-shaped export (tests/fixtures/substack) zipped as Substack
does, imported into issues/ and published."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import FIXTURES, MailerCli, one_line_error

from mailer.compose.issue import read

pytestmark = pytest.mark.slow  # a whole `mailer` command, issue rendered, in every test

EXPORT = FIXTURES / "substack"
IMPORTED = [
    "episode-1-tokenizers.md",
    "reading-list-2023.md",
    "welcome-to-the-weekly-parse.md",
    "what-we-got-wrong.md",
]


@pytest.fixture
def project(empty_project: Path) -> Path:
    return empty_project


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """The fixture folder as Substack's zip: posts.csv at the top, posts/ beside it."""
    path = tmp_path / "export-2024-03-12.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(EXPORT.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(EXPORT).as_posix())
    return path


def _split(path: Path) -> tuple[dict[str, object], str]:
    _, front, body = path.read_text(encoding="utf-8").split("---\n", 2)
    return yaml.safe_load(front), body


def test_published_posts_become_issues_once(
    project: Path, export: Path, mailer_cli: MailerCli
) -> None:
    first = mailer_cli(project, "import-posts", str(export))
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[-1] == (
        "4 imported, 0 already there, 1 skipped (draft), 1 skipped (page), 1 skipped (thread)"
    )
    assert sorted(p.name for p in (project / "issues").glob("*.md")) == IMPORTED

    meta, body = _split(project / "issues" / "welcome-to-the-weekly-parse.md")
    assert meta == {
        "title": "Welcome to The Weekly Parse",
        "preheader": "What this is, and why every Tuesday",
        "date": "2023-01-10T15:02:44.117Z",
        "published": True,
        "substack_id": "139871204.welcome-to-the-weekly-parse",
    }
    lines = body.strip().splitlines()
    assert lines[0].startswith("Hi, and welcome! **The Weekly Parse** is a short letter")
    # The captioned image: the picture, its caption as alt text and as a line below.
    assert (
        "![Our desk, on a good day](https://substackcdn.example.com/image/fetch/"
        "w_1456,c_limit/welcome.png)" in lines
    )
    assert "*Our desk, on a good day*" in lines
    assert "## What you will get" in lines
    assert "- One idea, explained slowly[^1]" in lines
    assert lines[-1] == "[^1]: Slowly means with examples, not with more words."
    # Substack's buttons and widgets are gone; the links of the text stay.
    for gone in ("Subscribe", "Share", "Type your email", "<", "data-attrs"):
        assert gone not in body, gone
    assert "[about page](https://parse.example.com/about)" in body

    meta, body = _split(project / "issues" / "reading-list-2023.md")
    assert meta["title"] == 'A reading list for 2023: ten papers, "no hype"'
    assert "1. [Attention Is All You Need](https://arxiv.org/abs/1706.03762)" in body
    assert "> Read the abstract, then the figures, then decide." in body
    assert "```\npip install transformers\n" in body
    meta, body = _split(project / "issues" / "episode-1-tokenizers.md")
    assert body.strip().splitlines()[0] == (
        "[Listen to this episode](https://api.substack.example.com/feed/podcast/140712345/audio.mp3)"
    )
    assert "iframe" not in body
    meta, _ = _split(project / "issues" / "what-we-got-wrong.md")
    assert meta["audience"] == "only_paid"

    for name in IMPORTED:  # each reads as an issue with nothing to warn about
        issue = read(project / "issues" / name)
        assert [n.code for n in issue.notices] == [], (name, issue.notices)

    before = {p.name: p.read_bytes() for p in (project / "issues").glob("*.md")}
    second = mailer_cli(project, "import-posts", str(export))
    assert second.exit_code == 0, second.output
    assert second.output.splitlines() == [
        "0 imported, 4 already there, 1 skipped (draft), 1 skipped (page), 1 skipped (thread)"
    ]
    assert {p.name: p.read_bytes() for p in (project / "issues").glob("*.md")} == before


def test_imported_posts_are_in_the_published_archive(
    project: Path, export: Path, mailer_cli: MailerCli
) -> None:
    assert mailer_cli(project, "import-posts", str(export)).exit_code == 0
    result = mailer_cli(project, "publish")
    assert result.exit_code == 0, result.output
    index = (project / "site" / "index.html").read_text(encoding="utf-8")
    order = [index.index(f"issues/{name.removesuffix('.md')}/") for name in IMPORTED]
    # Newest first, by the posts' own dates: paid (Feb), podcast, reading list, welcome (Jan).
    assert order[3] < order[0] < order[1] < order[2]
    assert '<time datetime="2023-01-10T15:02:44.117000+00:00">2023-01-10</time>' in index


@pytest.mark.parametrize(
    "content,message",
    [
        (b"not a zip at all", "cannot open the export: not a zip file"),
        (None, "no posts.csv in it: is this a Substack export?"),
    ],
)
def test_a_bad_export_is_one_line(
    project: Path, tmp_path: Path, content: bytes | None, message: str, mailer_cli: MailerCli
) -> None:
    path = tmp_path / "bad.zip"
    if content is None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("subscribers.csv", "email\nann@example.com\n")
    else:
        path.write_bytes(content)
    result = mailer_cli(project, "import-posts", str(path))
    assert result.exit_code == 65, result.output
    assert message in one_line_error(result)
    assert list((project / "issues").glob("*.md")) == []
