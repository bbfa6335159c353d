"""`mailer init`: a new folder that builds, previews and dry-runs, and never a file overwritten."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailer import config
from mailer.cli import main

MAILER = Path(sys.executable).with_name("mailer")
NAME = "Field Notes"
FROM = "Field Notes <hello@fieldnotes.example>"
URL = "https://news.fieldnotes.example"
FLAGS = ["--name", NAME, "--from", FROM, "--url", URL]
ISSUE = Path("issues") / "welcome-to-field-notes.md"
WRITTEN = [Path("mailer.toml"), Path(".env"), Path(".gitignore"), Path("subscribers.csv"), ISSUE]


@pytest.fixture(autouse=True)
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in an empty folder, with no MAILER_* variable of this process."""
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("MAILER_")]:
        monkeypatch.delenv(key)
    return tmp_path


def init(*args: str) -> Result:
    """`mailer init` through CliRunner, whose stdin is no terminal."""
    return CliRunner().invoke(main, ["init", *args])


def tree(root: Path) -> dict[Path, bytes]:
    """Every file under `root`, by relative path, with its bytes."""
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_init_writes_a_project(here: Path) -> None:
    result = init("news", *FLAGS)
    assert result.exit_code == 0, result.output
    assert result.output == (
        "created in news/, for Field Notes:\n"
        "  mailer.toml                       the settings, each explained (commit it)\n"
        "  .env                              MAILER_SECRET and the SMTP login (never commit it)\n"
        "  .gitignore                        keeps .env, subscribers.csv, .mailer/ and build/"
        " out of git\n"
        "  subscribers.csv                   your readers, one email,name row each\n"
        "  issues/welcome-to-field-notes.md  a first issue: edit it, or start your own beside it\n"
        "next:\n"
        "  cd news\n"
        "  mailer build welcome-to-field-notes             the email in build/, and what to"
        " check\n"
        "  mailer preview welcome-to-field-notes           in a browser, live as you edit\n"
        "  mailer send welcome-to-field-notes --dry-run    the plan and sample messages;"
        " nothing is sent\n"
        "then add readers to subscribers.csv, your postal address and SMTP server to"
        " mailer.toml, and send: docs/getting-started.md\n"
    )
    root = here / "news"
    assert sorted(tree(root)) == sorted(WRITTEN)

    toml = (root / "mailer.toml").read_text(encoding="utf-8")
    assert tomllib.loads(toml) == {
        "name": NAME,
        "from": FROM,
        "unsubscribe_url": f"{URL}/unsubscribe",
        "archive_url": f"{URL}/issues",
        "base_url": f"{URL}/",
        "accent_color": "#0b62d6",
        "smtp_host": "localhost",
        "smtp_port": 587,
        "smtp_security": "starttls",
        "rate": "10/s",
        "subscribers": "subscribers.csv",
    }
    # Every setting is explained: a comment above it, or above the few it comes with.
    explained = False
    for line in toml.splitlines():
        if line.startswith("# "):
            explained = True
        elif line:
            assert explained, line
        else:
            explained = False
    commented = re.findall(r"^# (\w+) = ", toml, re.M)
    assert commented == ["reply_to", "subscribe_url", "postal_address", "logo", "lang"]

    env = root / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    settings = [line for line in env.read_text(encoding="utf-8").splitlines() if "=" in line]
    assert len(settings) == 3
    assert re.fullmatch(r"MAILER_SECRET=[A-Za-z0-9_-]{43}", settings[0])
    assert settings[1:] == [
        "# MAILER_SMTP_USER=newsletter@example.org",
        "# MAILER_SMTP_PASSWORD=",
    ]
    gitignore = (root / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert [line for line in gitignore if not line.startswith("#")] == [
        ".env",
        "subscribers.csv",
        ".mailer/",
        "build/",
    ]
    assert (root / "subscribers.csv").read_text(encoding="utf-8") == "email,name\n"
    issue = (root / ISSUE).read_text(encoding="utf-8")
    assert issue.startswith('---\ntitle: "Welcome to Field Notes"\nexcerpt: ')
    assert "mailer preview welcome-to-field-notes" in issue

    loaded = config.load(root, environ={})
    assert (loaded.name, loaded.from_, loaded.list_name) == (NAME, FROM, NAME)
    assert len(loaded.secret) >= 32 and loaded.sources["secret"] == ".env"
    assert loaded.warnings == ()


def test_the_example_issue_builds_without_a_warning(here: Path) -> None:
    assert init("news", *FLAGS).exit_code == 0
    runner = CliRunner()
    root = str(here / "news")  # absolute: -C changes the directory of the process
    built = runner.invoke(main, ["-C", root, "build", "welcome-to-field-notes"])
    assert built.exit_code == 0, built.output
    assert built.stderr == ""  # no warning: line at all
    assert built.stdout.endswith("lint: nothing to fix for 13 email clients\n")
    html = (here / "news" / "build" / "welcome-to-field-notes" / "email.html").read_text("utf-8")
    assert "Welcome to Field Notes</h1>" in html
    assert "ISSUE #1 · " in html
    dry = runner.invoke(main, ["-C", root, "send", "welcome-to-field-notes", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.stderr == ""
    assert re.search(r"^  recipients +0$", dry.stdout, re.M)


def test_git_ignores_what_it_should(here: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    assert init("news", *FLAGS).exit_code == 0
    root = here / "news"
    (root / ".mailer").mkdir()
    (root / ".mailer" / "ledger.db").write_bytes(b"")
    (root / "build").mkdir()
    (root / "build" / "email.html").write_text("<html></html>", encoding="utf-8")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    status = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert sorted(status.stdout.splitlines()) == [
        "?? .gitignore",
        "?? issues/welcome-to-field-notes.md",
        "?? mailer.toml",
    ]


def test_every_project_gets_its_own_secret(here: Path) -> None:
    assert init("one", *FLAGS).exit_code == 0
    assert init("two", *FLAGS).exit_code == 0
    one = config.load(here / "one", environ={}).secret
    two = config.load(here / "two", environ={}).secret
    assert one != two


@pytest.mark.parametrize("existing", WRITTEN, ids=str)
def test_refuses_to_overwrite_anything(here: Path, existing: Path) -> None:
    root = here / "news"
    (root / existing).parent.mkdir(parents=True, exist_ok=True)
    (root / existing).write_text("mine\n", encoding="utf-8")
    before = tree(root)
    result = init("news", *FLAGS)
    assert result.exit_code == 2
    assert result.output == f"Error: news/{existing} already exists: nothing was written\n"
    assert tree(root) == before == {existing: b"mine\n"}


def test_init_here_without_dir(here: Path) -> None:
    result = init(*FLAGS)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("created here, for Field Notes:\n")
    assert "  cd " not in result.output
    assert sorted(tree(here)) == sorted(WRITTEN)


def test_the_name_defaults_to_the_from_display_name(here: Path) -> None:
    result = init("news", "--from", FROM, "--url", URL)
    assert result.exit_code == 0, result.output
    assert tomllib.loads((here / "news" / "mailer.toml").read_text("utf-8"))["name"] == NAME


def test_the_settings_of_where_it_runs_do_not_matter(here: Path) -> None:
    """A broken mailer.toml in the current folder is another project's: init still works."""
    (here / "mailer.toml").write_text("this is not = = toml\n", encoding="utf-8")
    result = init("news", *FLAGS)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "missing"),
    [
        ([], "--name, --url, --from"),
        (["--name", NAME], "--url, --from"),
        (["--name", NAME, "--url", URL], "--from"),
        (["--from", "hello@fieldnotes.example", "--url", URL], "--name"),
        (["--from", FROM], "--url"),
    ],
)
def test_without_a_terminal_flags_must_say_it_all(here: Path, args: list[str], missing: str):
    result = init("news", *args)
    assert result.exit_code == 2
    assert result.output == (
        f"Error: no terminal to ask on: give {missing}"
        " (mailer init --name NAME --from 'NAME <ADDRESS>' --url URL)\n"
    )
    assert not (here / "news").exists()


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        (
            "--from",
            "Field Notes",
            "From must look like 'Name <news@example.org>', got 'Field Notes'",
        ),
        (
            "--from",
            "a@localhost",
            "From must look like 'Name <news@example.org>', got 'a@localhost'",
        ),
        ("--url", "news.example.org", "the URL must be like https://news.example.org, got"),
        ("--url", "ftp://news.example.org", "the URL must be like https://news.example.org, got"),
        ("--name", "  ", "the name must be one line of text, got '  '"),
        ("--name", "Field\nNotes", "the name must be one line of text, got 'Field\\nNotes'"),
    ],
)
def test_bad_values_are_one_line(here: Path, flag: str, value: str, message: str) -> None:
    args = dict(zip(FLAGS[::2], FLAGS[1::2], strict=True)) | {flag: value}
    result = init("news", *[x for pair in args.items() for x in pair])
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {message}")
    assert result.output.count("\n") == 1
    assert not (here / "news").exists()


# -- on a terminal: the real script, on a pseudo-terminal -----------------------------------------


class Terminal:
    """The `mailer` script with a pseudo-terminal for its stdin, stdout and stderr."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
        self.process = subprocess.Popen(
            [str(MAILER), *args], stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env
        )
        os.close(slave)
        self.seen = b""

    def expect(self, text: str) -> None:
        """Read until `text` has been shown (the time limit only stops a hung test)."""
        while text.encode() not in self.seen:
            ready, _, _ = select.select([self.master], [], [], 60)
            assert ready, f"waited for {text!r}; saw {self.seen.decode(errors='replace')!r}"
            self.seen += os.read(self.master, 4096)
        self.seen = self.seen[self.seen.index(text.encode()) + len(text) :]

    def answer(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def rest(self) -> str:
        """Everything shown until the process ends; then its exit code is known."""
        while True:
            ready, _, _ = select.select([self.master], [], [], 60)
            assert ready, "the process stopped talking without ending"
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the other side closed
                chunk = b""
            if not chunk:
                break
            self.seen += chunk
        self.process.wait(timeout=60)
        os.close(self.master)
        return self.seen.decode()


def test_asks_on_a_terminal(here: Path) -> None:
    term = Terminal("init", "news", cwd=here)
    term.expect("Newsletter name: ")
    term.answer("Field Notes")
    term.expect("(https://...): ")
    term.answer("news.fieldnotes.example")  # no scheme: asked again
    term.expect("Error: the URL must be like https://news.example.org")
    term.expect("(https://...): ")
    term.answer(URL + "/")
    term.expect("From [Field Notes <newsletter@news.fieldnotes.example>]: ")
    term.answer("")  # the offered From
    rest = term.rest()
    assert term.process.returncode == 0, rest
    assert "created in news/, for Field Notes:" in rest
    settings = tomllib.loads((here / "news" / "mailer.toml").read_text("utf-8"))
    assert (settings["name"], settings["from"]) == (
        NAME,
        "Field Notes <newsletter@news.fieldnotes.example>",
    )
    assert settings["unsubscribe_url"] == f"{URL}/unsubscribe"


def test_a_flag_given_is_not_asked(here: Path) -> None:
    term = Terminal("init", "news", "--from", FROM, cwd=here)
    term.expect(f"Newsletter name [{NAME}]: ")
    term.answer("")
    term.expect("(https://...): ")
    term.answer(URL)
    rest = term.rest()
    assert term.process.returncode == 0, rest
    assert "From" not in rest.split("created", 1)[0]
    assert tomllib.loads((here / "news" / "mailer.toml").read_text("utf-8"))["from"] == FROM


def test_ctrl_d_at_a_question_writes_nothing(here: Path) -> None:
    term = Terminal("init", "news", cwd=here)
    term.expect("Newsletter name: ")
    os.write(term.master, b"\x04")  # end of input
    rest = term.rest()
    assert term.process.returncode == 130
    assert "aborted: nothing was written" in rest
    assert not (here / "news").exists()


def test_any_name_survives_toml_and_yaml(here: Path) -> None:
    name = 'Zoë\'s "Notes" \\ 2026'
    result = init("news", "--name", name, "--from", "zoe@example.org", "--url", URL)
    assert result.exit_code == 0, result.output
    root = here / "news"
    assert tomllib.loads((root / "mailer.toml").read_text("utf-8"))["name"] == name
    assert [p.name for p in (root / "issues").iterdir()] == ["welcome-to-zoe-s-notes-2026.md"]
    built = CliRunner().invoke(main, ["-C", str(root), "build", "welcome-to-zoe-s-notes-2026"])
    assert built.exit_code == 0 and built.stderr == "", built.output
    assert f"  subject    Welcome to {name}\n" in built.stdout
