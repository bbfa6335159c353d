"""`mailer build`: through click's CliRunner, and once through the installed script."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import CORPUS
from lxml import html as lxml_html

from mailer import config
from mailer.cli import main
from mailer.issue import read
from mailer.render import render

PROJECT = Path(__file__).resolve().parents[1]
SEED = PROJECT / "issues" / "issue-2.md"
SCRIPT = PROJECT / ".venv" / "bin" / "mailer"
ABSOLUTE = re.compile(r"^(https?://|mailto:|#)")

BAD_FRONT_MATTER = "---\ntitle: Broken\nexcerpt: one: two\n---\n\nBody.\n"  # line 3


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A user's project: issues/issue-2.md and mailer.toml. `-C` chdirs: undo it afterwards."""
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("MAILER_")]:
        monkeypatch.delenv(key)
    root = tmp_path / "project"
    (root / "issues").mkdir(parents=True)
    shutil.copy(SEED, root / "issues" / "issue-2.md")
    shutil.copy(PROJECT / "mailer.toml", root / "mailer.toml")
    return root


def mailer(project: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["-C", str(project), *args])


def summary(output: str) -> dict[str, str]:
    """The `  key   value` lines of the build report."""
    return dict(re.findall(r"^  (\w+) +(.*)$", output, re.M))


def urls(html: str) -> list[str]:
    doc = lxml_html.fromstring(html)
    return [a.get("href") for a in doc.iter("a")] + [i.get("src") for i in doc.iter("img")]


# -- the seed -------------------------------------------------------------------------------------


def test_build_seed(project):
    result = mailer(project, "build", "issue-2")
    assert result.exit_code == 0, result.output
    out = project / "build" / "issue-2"
    html = (out / "email.html").read_text(encoding="utf-8")
    text = (out / "email.txt").read_text(encoding="utf-8")
    issue = read(project / "issues" / "issue-2.md")
    email = render(issue, config.load(project, environ={}))

    assert re.match(
        rf"built {re.escape(str(out / 'email.html'))} and email.txt in \d+ ms\n", result.stdout
    )
    report = summary(result.stdout)
    assert report["subject"] == issue.subject
    assert report["preheader"] == issue.preheader
    assert re.fullmatch(r"\d+\.\d KB", report["html"])
    assert float(report["html"].split()[0]) == pytest.approx(email.html_bytes / 1024, abs=0.1)
    assert report["words"] == str(email.words)
    assert report["links"] == "57"
    assert report["images"] == "7"

    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert "warning: repaired 54 characters damaged by UTF-8 read as Mac Roman" in warnings
    assert sum("image without alt text" in w for w in warnings) == 7
    assert "warning: line 14: image without alt text: " in "\n".join(warnings)
    assert "warning: line 239: link is not https: http://aidemos.cs.toronto.edu/nds/" in warnings
    assert len(warnings) == 9
    assert "warning" not in result.stdout

    # the files are what one example reader gets: slots filled, nothing relative
    assert "%%mailer:" not in html and "%%mailer:" not in text
    assert [u for u in urls(html) if not ABSOLUTE.match(u or "")] == []
    assert "https://newsletter.example.org/unsubscribe" in html
    assert re.search(r"^Unsubscribe: https://newsletter\.example\.org/unsubscribe\S*$", text, re.M)
    assert "reader@example.org" in text
    assert "👋" in html and "👋" in text
    assert "üëã" not in html + text


def test_build_twice_overwrites(project):
    assert mailer(project, "build", "issue-2").exit_code == 0
    target = project / "build" / "issue-2" / "email.txt"
    target.write_text("stale", encoding="utf-8")
    assert mailer(project, "build", "issue-2.md").exit_code == 0
    assert target.read_text(encoding="utf-8").startswith("NLP Newsletter #2")


def test_build_out_folder(project):
    result = mailer(project, "build", "issue-2", "--out", str(project / "elsewhere"))
    assert result.exit_code == 0, result.output
    assert (project / "elsewhere" / "email.html").is_file()
    assert not (project / "build").exists()


# -- every corpus file, by path, never copied into the project ------------------------------------


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_build_corpus_file_by_path(project, path):
    result = mailer(project, "build", str(path))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    out = project / "build" / path.stem
    html = (out / "email.html").read_text(encoding="utf-8")
    text = (out / "email.txt").read_text(encoding="utf-8")
    issue = read(path)
    report = summary(result.stdout)
    assert report["subject"] == issue.subject
    assert report["links"] == str(len(issue.links))
    assert report["images"] == str(len(issue.images))
    assert "mojibake" not in result.stderr and "repaired" not in result.stderr
    assert [u for u in urls(html) if not ABSOLUTE.match(u or "")] == []
    assert "%%mailer:" not in html + text
    assert not list((project / "issues").glob("nlp-*"))  # nothing copied in


def test_build_relative_path(project):
    drafts = project / "drafts"
    drafts.mkdir()
    (drafts / "x.md").write_text(
        "---\ntitle: A draft\n---\n\nHello there.\n\nSee [this](https://example.org).\n",
        encoding="utf-8",
    )
    result = mailer(project, "build", "drafts/x.md")
    assert result.exit_code == 0, result.output
    assert summary(result.stdout)["subject"] == "A draft"
    assert summary(result.stdout)["preheader"] == "Hello there."
    text = (project / "build" / "x" / "email.txt").read_text(encoding="utf-8")
    assert "See this [1]." in text
    assert "[1] https://example.org" in text


@pytest.mark.parametrize(
    ("front", "slug"),
    [
        ("title: Café news", "cafe"),
        ("title: 你好", "hello-zh"),
        ("title: نشرة\nlang: ar", "ar"),
    ],
    ids=["latin", "chinese", "arabic-rtl"],
)
def test_build_short_non_ascii_subject(project, front, slug):
    (project / "issues" / f"{slug}.md").write_text(
        f"---\n{front}\n---\n\nBody.\n", encoding="utf-8"
    )
    result = mailer(project, "build", slug)
    assert result.exit_code == 0, result.output
    html = (project / "build" / slug / "email.html").read_text(encoding="utf-8")
    if slug == "ar":
        assert '<html lang="ar" dir="rtl"' in html


def test_build_non_ascii_from_name(project):
    toml = (project / "mailer.toml").read_text(encoding="utf-8")
    toml = toml.replace('from = "NLP Newsletter <', 'from = "Café NLP <')
    (project / "mailer.toml").write_text(toml, encoding="utf-8")
    result = mailer(project, "build", "issue-2")
    assert result.exit_code == 0, result.output


# -- errors: one clean message and an exit code ------------------------------------------------


def test_missing_issue(project):
    result = mailer(project, "build", "issue-99")
    assert result.exit_code == 65
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert lines[0] == "Error: no issue 'issue-99'"
    assert all(line.startswith("  hint: ") for line in lines[1:])
    assert "issue-2" in result.output  # the hint lists what exists
    assert not (project / "build").exists()


def test_broken_front_matter_names_the_line(project):
    (project / "issues" / "bad.md").write_text(BAD_FRONT_MATTER, encoding="utf-8")
    result = mailer(project, "build", "bad")
    assert result.exit_code == 65
    assert "Traceback" not in result.output
    first = result.output.strip().splitlines()[0]
    assert first.startswith("Error: ")
    assert "bad.md:3:" in first
    assert "YAML" in first


def test_not_utf8_names_the_line(project):
    (project / "issues" / "latin.md").write_bytes(b"---\ntitle: T\n---\n\nCaf\xe9\n")
    result = mailer(project, "build", "latin")
    assert result.exit_code == 65
    assert "latin.md:5:" in result.output
    assert "Traceback" not in result.output


def test_naive_send_at(project):
    (project / "issues" / "late.md").write_text(
        "---\ntitle: T\nsend_at: 2026-12-01 09:00\n---\n\nBody.\n", encoding="utf-8"
    )
    result = mailer(project, "build", "late")
    assert result.exit_code == 65
    assert "send_at" in result.output


def test_bad_config_exits_2(project):
    (project / "mailer.toml").write_text('smtp_port = "x"\n', encoding="utf-8")
    result = mailer(project, "build", "issue-2")
    assert result.exit_code == 2
    assert "smtp_port" in result.output
    assert "Traceback" not in result.output


# -- templates through the command line -----------------------------------------------------------

MARKED = (
    "<mjml><mj-body><mj-section><mj-column><mj-text>CLI-TEMPLATE-MARKER {{ content }}"
    ' <a href="{{ unsubscribe_url }}">unsubscribe</a></mj-text></mj-column></mj-section>'
    "</mj-body></mjml>\n"
)


def test_templates_flag(project, tmp_path):
    folder = tmp_path / "my-templates"
    folder.mkdir()
    (folder / "newsletter.mjml.j2").write_text(MARKED, encoding="utf-8")
    result = mailer(project, "--templates", str(folder), "build", "issue-2")
    assert result.exit_code == 0, result.output
    html = (project / "build" / "issue-2" / "email.html").read_text(encoding="utf-8")
    assert "CLI-TEMPLATE-MARKER" in html
    # the text template falls back to the built-in one
    text = (project / "build" / "issue-2" / "email.txt").read_text(encoding="utf-8")
    assert text.startswith("NLP Newsletter #2")


def test_templates_flag_strict_undefined(project, tmp_path):
    folder = tmp_path / "bad-templates"
    folder.mkdir()
    (folder / "newsletter.mjml.j2").write_text(
        MARKED.replace("{{ content }}", "{{ nope }}"), encoding="utf-8"
    )
    result = mailer(project, "--templates", str(folder), "build", "issue-2")
    assert result.exit_code == 65
    assert "nope" in result.output
    assert "Traceback" not in result.output


def test_templates_flag_unknown_mjml_tag(project, tmp_path):
    folder = tmp_path / "bad-mjml"
    folder.mkdir()
    (folder / "newsletter.mjml.j2").write_text(
        MARKED.replace("<mj-text>", "<mj-wat /><mj-text>"), encoding="utf-8"
    )
    result = mailer(project, "--templates", str(folder), "build", "issue-2")
    assert result.exit_code == 65
    assert "mj-wat" in result.output
    assert "Traceback" not in result.output


def test_project_templates_folder(project):
    (project / "templates").mkdir()
    (project / "templates" / "newsletter.mjml.j2").write_text(MARKED, encoding="utf-8")
    assert mailer(project, "build", "issue-2").exit_code == 0
    html = (project / "build" / "issue-2" / "email.html").read_text(encoding="utf-8")
    assert "CLI-TEMPLATE-MARKER" in html


# -- no network -----------------------------------------------------------------------------------


def test_build_needs_no_network(project, monkeypatch):
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("no network during a build")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    result = mailer(project, "build", "issue-2")
    assert result.exit_code == 0, result.output
    result = mailer(project, "build", str(CORPUS[0]))
    assert result.exit_code == 0, result.output
    assert attempts == []


# -- the installed script --------------------------------------------------------------------------


def run_script(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    return subprocess.run(
        [str(SCRIPT), "-C", str(project), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(not SCRIPT.exists(), reason=f"{SCRIPT} is not installed")
def test_installed_script_exit_codes(project):
    (project / "issues" / "bad.md").write_text(BAD_FRONT_MATTER, encoding="utf-8")

    ok = run_script(project, "build", "issue-2")
    assert ok.returncode == 0, ok.stderr
    assert (project / "build" / "issue-2" / "email.html").is_file()
    assert "links      57" in ok.stdout

    missing = run_script(project, "build", "issue-99")
    assert missing.returncode == 65
    assert missing.stderr.startswith("Error: no issue 'issue-99'")
    assert "Traceback" not in missing.stderr

    broken = run_script(project, "build", "bad")
    assert broken.returncode == 65
    assert "bad.md:3:" in broken.stderr
    assert "Traceback" not in broken.stderr

    (project / "mailer.toml").write_text('smtp_security = "tls"\n', encoding="utf-8")
    bad_config = run_script(project, "build", "issue-2")
    assert bad_config.returncode == 2
    assert "smtp_security" in bad_config.stderr
