"""Reading an issue file: front matter, encodings, mojibake repair, the parsed Markdown."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import CORPUS, PT_BR, ZH

from mailer.compose.issue import Issue, read
from mailer.compose.load import resolve
from mailer.errors import InputError

PROJECT = Path(__file__).resolve().parents[1]
SEED = PROJECT / "issues" / "issue-2.md"


def write(tmp_path: Path, content: str | bytes, name: str = "post.md") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def walk(tokens) -> list:
    out = []
    for token in tokens:
        out.append(token)
        if token.children:
            out.extend(walk(token.children))
    return out


def test_corpus_is_there():
    assert [p.name for p in CORPUS] == [
        "nlp-newsletter-1-en.md",
        "nlp-newsletter-2-zh.md",
        "nlp-newsletter-3-en.md",
        "nlp-newsletter-3-pt-br.md",
    ]


# -- title, subject, preheader, meta -----------------------------------------------------------


def test_title_is_the_subject(tmp_path):
    issue = read(write(tmp_path, "---\ntitle: Hello readers\nexcerpt: Short\n---\n\nBody.\n"))
    assert issue.title == "Hello readers"
    assert issue.subject == "Hello readers"
    assert issue.preheader == "Short"


def test_subject_overrides_title(tmp_path):
    text = "---\ntitle: The long title\nsubject: Short subject\n---\n\nBody.\n"
    issue = read(write(tmp_path, text))
    assert issue.title == "The long title"
    assert issue.subject == "Short subject"


def test_preheader_beats_excerpt(tmp_path):
    text = "---\ntitle: T\nexcerpt: From excerpt\npreheader: From preheader\n---\n\nBody.\n"
    assert read(write(tmp_path, text)).preheader == "From preheader"


def test_excerpt_is_the_preheader(tmp_path):
    text = "---\ntitle: T\nexcerpt: From excerpt\n---\n\nFirst paragraph.\n"
    assert read(write(tmp_path, text)).preheader == "From excerpt"


@pytest.mark.parametrize("excerpt", ['excerpt: ""', "excerpt:", ""])
def test_empty_excerpt_falls_back_to_first_paragraph(tmp_path, excerpt):
    text = (
        f"---\ntitle: T\n{excerpt}\n---\n\n"
        "![](https://example.org/a.png)\n\nThe first words.\n\nMore.\n"
    )
    assert read(write(tmp_path, text)).preheader == "The first words."


def test_zh_corpus_empty_excerpt_uses_first_paragraph():
    issue = read(ZH)
    assert issue.meta["excerpt"] == ""
    assert issue.preheader == "Thanks to Kaiyuan (WeChat: NewBeeNLP) for this great translation."


def test_first_paragraph_preheader_keeps_spacing_around_inline_markup(tmp_path):
    body = "Read [the paper](https://example.org/p). A **bold**word, `x`s and 欢迎**如果**。\n"
    issue = read(write(tmp_path, "---\ntitle: T\n---\n\n" + body))
    assert issue.preheader == "Read the paper. A boldword, xs and 欢迎如果。"


def test_first_paragraph_preheader_is_shortened(tmp_path):
    words = " ".join(f"word{n}" for n in range(60))
    issue = read(write(tmp_path, f"---\ntitle: T\n---\n\n{words}\n"))
    assert len(issue.preheader) <= 150
    assert issue.preheader.endswith("…")
    assert words.startswith(issue.preheader[:-1])


def test_other_front_matter_keys_are_kept_in_meta():
    issue = read(SEED)
    assert issue.meta["author"] == "billy_rick"
    assert issue.meta["layout"] == "post"
    assert issue.meta["tags"] == ["nlp_newsletter"]
    assert issue.meta["image"] == {"thumb": "nlp_newsletter_2.png"}
    assert issue.meta["comments"] is True
    assert "title" in issue.meta and "excerpt" in issue.meta
    with pytest.raises(TypeError):
        issue.meta["author"] = "someone else"  # type: ignore[index]


def test_seed_reads():
    issue = read(SEED)
    assert isinstance(issue, Issue)
    assert issue.slug == "issue-2"
    assert issue.title.startswith("NLP Newsletter #2 [EN]: Reformer, DeepMath")
    assert issue.title.endswith("Open-Sourcing ML,…")
    assert issue.subject == issue.title
    assert issue.preheader == (
        "This second issue covers topics that range from model interpretability "
        "to protein folding to active transfer learning."
    )
    assert issue.lang == "en" and issue.dir == "ltr"
    assert issue.send_at is None
    assert len(issue.links) == 57
    assert len(issue.images) == 7


# -- front matter errors -------------------------------------------------------------------------


def test_missing_title(tmp_path):
    path = write(tmp_path, "---\nexcerpt: no title here\n---\n\nBody.\n")
    with pytest.raises(InputError) as err:
        read(path)
    assert "'title'" in str(err.value)
    assert "missing" in str(err.value)
    assert str(path) in str(err.value)
    assert err.value.exit_code == 65


def test_empty_front_matter_is_a_missing_title(tmp_path):
    with pytest.raises(InputError, match="'title' is missing"):
        read(write(tmp_path, "---\n---\n\nBody.\n"))


@pytest.mark.parametrize("bad", ["[a, b]", "{a: b}", "\n  - one\n  - two"])
def test_non_text_title(tmp_path, bad):
    with pytest.raises(InputError) as err:
        read(write(tmp_path, f"---\ntitle: {bad}\n---\n\nBody.\n"))
    assert "'title'" in str(err.value)
    assert "must be text" in str(err.value)


def test_non_text_subject_names_subject(tmp_path):
    with pytest.raises(InputError, match="'subject' must be text"):
        read(write(tmp_path, "---\ntitle: T\nsubject: [x]\n---\n\nBody.\n"))


def test_number_title_is_text(tmp_path):
    assert read(write(tmp_path, "---\ntitle: 2024\n---\n\nBody.\n")).title == "2024"


def test_hash_in_an_unquoted_title_is_a_warning_with_its_line(tmp_path):
    """YAML ends a plain value at ` #`: the rest of the title would silently go."""
    text = "---\nlang: en\ntitle: Weekly Bits #2: colons\npreheader: Read #3 first\n---\n\nHi.\n"
    issue = read(write(tmp_path, text))
    assert (issue.title, issue.preheader) == ("Weekly Bits", "Read")
    assert [(n.code, n.line, n.message) for n in issue.notices] == [
        (
            "front-matter",
            3,
            "YAML reads '#2: colons' in 'title' as a comment, so the title is \"Weekly Bits\": "
            'put the value in quotes (title: "Weekly Bits #2: colons")',
        ),
        (
            "front-matter",
            4,
            "YAML reads '#3 first' in 'preheader' as a comment, so the preheader is \"Read\": "
            'put the value in quotes (preheader: "Read #3 first")',
        ),
    ]


@pytest.mark.parametrize(
    "title", ['"Weekly Bits #2: colons"', "'Weekly Bits #2'", "Weekly Bits#2", "C# weekly"]
)
def test_hash_that_yaml_keeps_is_no_warning(tmp_path, title):
    issue = read(write(tmp_path, f"---\nlang: en\ntitle: {title}\n---\n\nHi.\n"))
    assert "#" in issue.title
    assert issue.notices == ()


def test_title_that_is_all_comment_says_why_it_is_missing(tmp_path):
    path = write(tmp_path, "---\nlang: en\ntitle: #2\n---\n\nHi.\n")
    with pytest.raises(InputError) as err:
        read(path)
    assert str(err.value) == (
        f"{path}:3: YAML reads '#2' in 'title' as a comment, so there is no title: "
        'put the value in quotes (title: "#2")'
    )


BROKEN_YAML = (
    "---\n"  # 1
    "title: Hello\n"  # 2
    "author: me\n"  # 3
    "tags: [a, b]\n"  # 4
    "excerpt: one: two\n"  # 5  <- a colon inside a plain value
    "lang: en\n"  # 6
    "---\n"
    "\nBody.\n"
)


def test_broken_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, BROKEN_YAML, name="broken.md")
    with pytest.raises(InputError) as err:
        read(path)
    message = str(err.value)
    assert f"{path}:5:" in message
    assert "broken.md" in message
    assert "YAML" in message
    assert err.value.line == 5


def test_broken_yaml_line_with_bom_and_crlf(tmp_path):
    raw = "\ufeff" + BROKEN_YAML.replace("\n", "\r\n")
    path = write(tmp_path, raw, name="broken-crlf.md")
    with pytest.raises(InputError) as err:
        read(path)
    assert f"{path}:5:" in str(err.value)


def test_broken_yaml_on_first_key_line(tmp_path):
    path = write(tmp_path, "---\ntitle: a: b\n---\n\nBody.\n")
    with pytest.raises(InputError) as err:
        read(path)
    assert err.value.line == 2


def test_no_front_matter(tmp_path):
    path = write(tmp_path, "# Just Markdown\n\nNo front matter at all.\n", name="plain.md")
    with pytest.raises(InputError) as err:
        read(path)
    message = err.value.format_message()
    assert "plain.md:1:" in message
    assert "has no front matter" in message
    assert "'---'" in message  # the hint says how to start one


def test_front_matter_never_closed(tmp_path):
    with pytest.raises(InputError, match="never closed"):
        read(write(tmp_path, "---\ntitle: T\n\nBody without a closing line.\n"))


def test_front_matter_that_is_not_a_mapping(tmp_path):
    with pytest.raises(InputError, match="key: value"):
        read(write(tmp_path, "---\n- a\n- b\n---\n\nBody.\n"))


def test_bad_lang_names_lang(tmp_path):
    with pytest.raises(InputError, match="'lang'"):
        read(write(tmp_path, "---\ntitle: T\nlang: not a language\n---\n\nBody.\n"))


# -- send_at -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["2026-12-01 09:00", "2026-12-01T09:00:00", "'2026-12-01 09:00'"])
def test_naive_send_at_is_refused(tmp_path, value):
    with pytest.raises(InputError) as err:
        read(write(tmp_path, f"---\ntitle: T\nsend_at: {value}\n---\n\nBody.\n"))
    assert "'send_at'" in str(err.value)
    assert "time zone" in str(err.value)


def test_send_at_with_offset(tmp_path):
    issue = read(write(tmp_path, "---\ntitle: T\nsend_at: 2026-12-01T09:00:00+01:00\n---\n\nB\n"))
    assert issue.send_at == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def test_send_at_with_zone(tmp_path):
    text = "---\ntitle: T\nsend_at: '2026-07-01 09:00 Europe/Berlin'\n---\n\nB\n"
    assert read(write(tmp_path, text)).send_at == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)


def test_send_at_date_only_is_refused(tmp_path):
    with pytest.raises(InputError, match="'send_at'"):
        read(write(tmp_path, "---\ntitle: T\nsend_at: 2026-12-01\n---\n\nBody.\n"))


# -- encodings and whitespace --------------------------------------------------------------------


def test_crlf_bom_tabs_and_no_break_spaces(tmp_path):
    text = (
        "\ufeff---\r\n"
        "title: Crlf issue\r\n"
        "excerpt: Ready\u00a0?\r\n"
        "---\r\n"
        "\r\n"
        "- one\r\n"
        "\t- nested\r\n"
        "\r\n"
        "Price:\u00a0100\u00a0€ and\ta tab.\r\n"
        "\r\n"
        "\\\\\r\n"
        "Last line.\r\n"
    )
    issue = read(write(tmp_path, text))
    assert issue.title == "Crlf issue"  # no BOM glued to anything, no stray \r
    assert "\r" not in issue.body
    assert "\ufeff" not in issue.body and "\ufeff" not in issue.title
    assert "Price:\u00a0100\u00a0€ and\ta tab." in issue.body
    assert "\\\\" not in issue.body  # the CRLF spacer line was recognised
    lists = [t for t in walk(issue.tokens) if t.type == "bullet_list_open"]
    assert len(lists) == 2  # the tab-indented item is a nested list
    inline = [t.content for t in walk(issue.tokens) if t.type == "text"]
    assert "nested" in inline
    assert "Price:\u00a0100\u00a0€ and\ta tab." in inline


def test_no_break_space_in_subject_is_kept(tmp_path):
    # Quoted: in plain YAML, " : " after a no-break space would start a mapping.
    text = '---\ntitle: "Numéro\u00a03\u00a0: la suite"\nexcerpt: Prêts\u00a0?\n---\n\nBody.\n'
    issue = read(write(tmp_path, text))
    assert issue.subject == "Numéro\u00a03\u00a0: la suite"
    assert issue.preheader == "Prêts\u00a0?"


def test_multiline_title_is_folded_to_one_line(tmp_path):
    issue = read(write(tmp_path, "---\ntitle: |\n  Two\n  lines\n---\n\nBody.\n"))
    assert issue.subject == "Two lines"


def test_lone_cr_line_endings(tmp_path):
    issue = read(write(tmp_path, "---\rtitle: Old Mac\r---\r\rBody.\r"))
    assert issue.title == "Old Mac"
    assert "\r" not in issue.body


def test_not_utf8_names_the_line(tmp_path):
    raw = b"---\ntitle: T\n---\n\nFine line.\n\nCaf\xe9 in Latin-1 on line 7.\n"
    path = write(tmp_path, raw, name="latin1.md")
    with pytest.raises(InputError) as err:
        read(path)
    assert f"{path}:7:" in str(err.value)
    assert "UTF-8" in str(err.value)
    assert err.value.line == 7


def test_not_utf8_in_front_matter(tmp_path):
    with pytest.raises(InputError) as err:
        read(write(tmp_path, b"---\ntitle: Caf\xe9\n---\n\nBody.\n"))
    assert err.value.line == 2


def test_unreadable_file(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read(tmp_path / "missing.md")


# -- lang and direction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "direction"), [("ar", "rtl"), ("he", "rtl"), ("fa-IR", "rtl"), ("pt-BR", "ltr")]
)
def test_direction_follows_lang(tmp_path, lang, direction):
    issue = read(write(tmp_path, f"---\ntitle: T\nlang: {lang}\n---\n\nBody.\n"))
    assert (issue.lang, issue.dir) == (lang, direction)


def test_default_lang_comes_from_settings(tmp_path):
    issue = read(write(tmp_path, "---\ntitle: T\n---\n\nBody.\n"), default_lang="de")
    assert issue.lang == "de"


# -- Markdown: spacers, emphasis, raw HTML, comments ---------------------------------------------


def test_spacer_lines_become_blank_lines(tmp_path):
    text = "---\ntitle: T\n---\n\nOne\n\\\\\nTwo\n\n```\n\\\\\n```\n"
    issue = read(write(tmp_path, text))
    paragraphs = [t for t in issue.tokens if t.type == "paragraph_open"]
    assert len(paragraphs) == 2  # the spacer split "One" from "Two"
    fences = [t for t in issue.tokens if t.type == "fence"]
    assert fences[0].content == "\\\\\n"  # but a `\\` inside fenced code is code


def test_seed_spacers_leave_no_backslash():
    issue = read(SEED)
    raw = SEED.read_text(encoding="utf-8")
    assert len(re.findall(r"^\\\\[ \t]*$", raw, re.M)) > 30  # the seed is full of them
    assert "\\" not in issue.body
    contents = [t.content for t in walk(issue.tokens)]
    assert not any("\\" in c for c in contents)


def test_bold_italic_is_em_strong(tmp_path):
    # (alone in its paragraph it would be a heading: see test_source.py)
    issue = read(write(tmp_path, "---\ntitle: T\n---\n\n***Both at once*** and more.\n"))
    kinds = [t.type for t in walk(issue.tokens) if not (t.type == "text" and not t.content)]
    assert kinds[kinds.index("em_open") : kinds.index("em_close") + 1] == [
        "em_open",
        "strong_open",
        "text",
        "strong_close",
        "em_close",
    ]


def test_html_comments_are_dropped_from_tokens(tmp_path):
    text = (
        "---\ntitle: T\n---\n\n<!-- block secret -->\n\n"
        "Text <!-- inline secret --> after.\n\n<div>kept <!-- mixed secret --></div>\n"
    )
    issue = read(write(tmp_path, text))
    leaves = " ".join(t.content for t in walk(issue.tokens) if not t.children)
    assert "secret" not in leaves
    assert "kept" in leaves


def test_pt_br_comments_and_their_links_are_gone():
    issue = read(PT_BR)
    source = PT_BR.read_text(encoding="utf-8")
    comments = re.findall(r"<!--(.*?)-->", source, re.S)
    assert len(comments) == 39
    # Links that exist only inside the English originals are not links of the email.
    outside = re.sub(r"<!--.*?-->", "", source, flags=re.S)
    only_in_comments = {
        url
        for c in comments
        for url in re.findall(r"\]\((https?://[^)\s]+)\)", c)
        if url not in outside
    }
    assert len(only_in_comments) == 2
    assert not only_in_comments & set(issue.links)


def test_links_include_raw_html_anchors(tmp_path):
    text = (
        "---\ntitle: T\n---\n\n[md](https://example.org/md) and https://example.org/auto\n\n"
        '<p><a href="https://example.org/raw">raw</a> <img src="https://example.org/r.png"></p>\n\n'
        "![alt](https://example.org/i.png)\n"
    )
    issue = read(write(tmp_path, text))
    assert issue.links == [
        "https://example.org/md",
        "https://example.org/auto",
        "https://example.org/raw",
    ]
    assert issue.images == ["https://example.org/i.png", "https://example.org/r.png"]
    alt_notices = [n for n in issue.notices if n.code == "alt"]
    assert len(alt_notices) == 1 and alt_notices[0].line == 7


def test_relative_links_are_made_absolute_with_base_url(tmp_path):
    text = "---\ntitle: T\n---\n\n[a](/posts/a) ![b](img/b.png) [c](#top)\n"
    issue = read(write(tmp_path, text), base_url="https://example.org/blog/")
    assert issue.links == ["https://example.org/posts/a", "#top"]
    assert issue.images == ["https://example.org/blog/img/b.png"]
    bare = read(write(tmp_path, text, name="bare.md"))
    assert [n.code for n in bare.notices].count("relative") == 2


# -- mojibake ------------------------------------------------------------------------------------


def test_seed_mojibake_is_repaired():
    issue = read(SEED)
    damaged = SEED.read_text(encoding="utf-8")
    original = damaged.encode("mac_roman").decode("utf-8")  # how the author wrote it
    expected_body = re.sub(r"^\\\\[ \t]*$", "", original.split("\n---\n", 1)[1], flags=re.M)
    assert issue.body == expected_body
    everything = issue.title + issue.preheader + issue.body
    for junk in ("‚Ä", "üë", "Ã©", "\uf8ff"):
        assert junk not in everything
    assert "👋" in issue.body and "—" in issue.body and "📙" in issue.body
    mojibake = [n for n in issue.notices if n.code == "mojibake"]
    assert len(mojibake) == 1
    assert "Mac Roman" in mojibake[0].message
    assert "54" in mojibake[0].message  # 54 damaged characters in the seed


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_has_no_mojibake_notice(path):
    issue = read(path)
    assert [n for n in issue.notices if n.code == "mojibake"] == []
    # ... and its text comes through untouched
    source = path.read_text(encoding="utf-8")
    assert issue.title in source.replace('\\"', '"')


def test_correct_accents_are_left_alone(tmp_path):
    text = "---\ntitle: Édition spéciale\n---\n\nCafé, naïve, Ångström, Über — “quotes”.\n"
    issue = read(write(tmp_path, text))
    assert issue.title == "Édition spéciale"
    assert "Café, naïve, Ångström, Über — “quotes”." in issue.body
    assert not [n for n in issue.notices if n.code == "mojibake"]


def test_windows_1252_mojibake_is_repaired(tmp_path):
    # (no ” in it: its last UTF-8 byte, 0x9D, is one cp1252 leaves undefined)
    original = "---\ntitle: Café — ‘news’\n---\n\nWelcome 👋 to the café.\n"
    damaged = original.encode("utf-8").decode("cp1252")
    assert "â€”" in damaged
    issue = read(write(tmp_path, damaged))
    assert issue.title == "Café — ‘news’"
    assert "Welcome 👋 to the café." in issue.body
    assert [n.code for n in issue.notices] == ["mojibake"]


def test_latin1_mojibake_with_c1_controls_is_repaired(tmp_path):
    # Read as Latin-1 (or cp1252 with Latin-1 for its undefined bytes): ” ends in U+009D.
    original = "---\ntitle: “Quoted” — news\n---\n\nWelcome 👋\n"
    damaged = "".join(
        bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in original.encode("utf-8")
    )
    assert "\x9d" in damaged
    issue = read(write(tmp_path, damaged))
    assert issue.title == "“Quoted” — news"
    assert "Welcome 👋" in issue.body


# -- resolve -------------------------------------------------------------------------------------


def test_resolve_names_and_paths(tmp_path):
    (tmp_path / "issues").mkdir()
    target = write(tmp_path / "issues", "---\ntitle: T\n---\n", name="issue-9.md")
    assert resolve("issue-9", tmp_path) == target
    assert resolve("issue-9.md", tmp_path) == target
    assert resolve(str(target), tmp_path) == target
    assert resolve(str(ZH), tmp_path) == ZH


def test_resolve_unknown_lists_known(tmp_path):
    (tmp_path / "issues").mkdir()
    write(tmp_path / "issues", "---\ntitle: T\n---\n", name="issue-9.md")
    with pytest.raises(InputError) as err:
        resolve("issue-10", tmp_path)
    assert "no issue 'issue-10'" in str(err.value)
    assert "issue-9" in err.value.format_message()
