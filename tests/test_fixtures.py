"""The suite stands alone: its fixtures are in the repository, and nothing reads beside it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CORPUS, FIXTURES, ROOT, SEED_FIXTURE

# Spelled in pieces so this file does not trip its own guard.
FORBIDDEN = ("../" + "shared", "parents[" + "2]", "/shared/" + "corpus", "/shared/" + "seed")
GUARDED = ("tests", "bench", "mailer")


def test_seed_fixture_is_the_bundled_example_byte_for_byte() -> None:
    assert SEED_FIXTURE.read_bytes() == (ROOT / "issues" / "issue-2.md").read_bytes()


def test_fixture_folder_holds_the_four_newsletters_the_seed_and_the_exports() -> None:
    files = sorted(str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*") if p.is_file())
    assert files == [
        "PROVENANCE.md",
        "bounces/README.md",
        "bounces/arf-auth-failure.eml",
        "bounces/arf-redacted.eml",
        "bounces/auto-reply.eml",
        "bounces/dsn-delivered.eml",
        "bounces/dsn-malformed.eml",
        "bounces/exim-plain.eml",
        "bounces/garbage.eml",
        "bounces/gmail-5.1.1.eml",
        "bounces/gmail-5.7.1-blocked.eml",
        "bounces/gmail-delay-4.2.2.eml",
        "bounces/office365-5.1.10.eml",
        "bounces/postfix-5.1.1.eml",
        "bounces/postfix-delayed-4.4.1.eml",
        "bounces/unsubscribe-mailto.eml",
        "bounces/yahoo-arf.eml",
        "corpus/nlp-newsletter-1-en.md",
        "corpus/nlp-newsletter-2-zh.md",
        "corpus/nlp-newsletter-3-en.md",
        "corpus/nlp-newsletter-3-pt-br.md",
        "feeds/atom-newsletter.xml",
        "feeds/broken.xml",
        "feeds/not-a-feed.html",
        "feeds/rss-newsletter.xml",
        "imports/buttondown-subscribers.csv",
        "imports/hand-made.csv",
        "imports/listmonk-import.csv",
        "imports/listmonk-subscribers.csv",
        "imports/mailchimp/cleaned_members_export_3f1c2a9b7d.csv",
        "imports/mailchimp/subscribed_members_export_3f1c2a9b7d.csv",
        "imports/mailchimp/unsubscribed_members_export_3f1c2a9b7d.csv",
        "imports/substack/email_list.nlp-newsletter.csv",
        "imports/substack/posts.csv",
        "seed/issue-2.md",
        "substack/posts.csv",
        "substack/posts/139871204.welcome-to-the-weekly-parse.html",
        "substack/posts/140233918.reading-list-2023.html",
        "substack/posts/140712345.episode-1-tokenizers.html",
        "substack/posts/141002200.what-we-got-wrong.html",
        "substack/posts/141500001.unfinished-thoughts.html",
        "substack/posts/141600002.about.html",
        "substack/posts/141700003.open-thread-1.html",
    ]
    assert [p.parent for p in CORPUS] == [FIXTURES / "corpus"] * 4
    assert all(p.is_file() for p in CORPUS)


IMPORTS = sorted(p for p in (FIXTURES / "imports").rglob("*") if p.is_file())


@pytest.mark.parametrize("path", [*CORPUS, SEED_FIXTURE, *IMPORTS], ids=lambda p: p.name)
def test_provenance_names_every_fixture(path: Path) -> None:
    assert f"`{path.name}`" in (FIXTURES / "PROVENANCE.md").read_text(encoding="utf-8")


def test_pt_br_keeps_its_39_comments() -> None:
    """The property the tests rely on, as README/PROVENANCE describe it."""
    pt_br = next(p for p in CORPUS if p.name.endswith("-pt-br.md"))
    assert pt_br.read_text(encoding="utf-8").count("<!--") == 39


def _guarded_files() -> list[Path]:
    return [
        p
        for top in GUARDED
        for p in sorted((ROOT / top).rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]


def test_nothing_reads_outside_the_repository() -> None:
    files = _guarded_files()
    assert any(p.name == "conftest.py" for p in files)  # the walk found the suite
    offenders = [
        f"{p.relative_to(ROOT)}: {needle}"
        for p in files
        for needle in FORBIDDEN
        if needle.encode() in p.read_bytes()
    ]
    assert offenders == []
