"""The documentation holds: README.md's command table names every command and option, docs/
names every setting and every package folder, and every example shown as output is the output
of running it.

Examples are fenced ```console blocks: each `$ ` line is a command (a trailing backslash
continues it on the next line), the lines after it what it prints (stdout and stderr, as a
terminal shows them). A line that is only `…` stands for any number of lines; `…` inside a
line for any text. The commands of one page run in order in one fresh project (issues/,
mailer.toml, the example list, a .env holding MAILER_SECRET), so a page can make a key and then
show what uses it: `cd DIR` moves the page's next commands into DIR, `$?` is the previous
command's exit status, and stdin is at its end, as in a script. A fenced block whose info string
says `file=PATH` is written to PATH in the current folder where it appears; one that says
`edit=PATH` sets its `key = value` lines in that TOML file, as a user edits it.

What a page needs that is no example (a server it tells the reader to start, a file the
reader brings) is done by the test: BACKGROUND runs beside a page's examples, its port and
folders standing in for the ones the page shows; SETUP comes before the first example of a
command.
"""

from __future__ import annotations

import http.server
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from conftest import FIXTURE_SECRET, FIXTURES, ROOT, SECRET, SENT
from test_bounces import BOUNCES, READERS
from test_digest import FEEDS, FeedServer
from test_digest import _handler as feed_handler

import mailer.cli
from mailer import config
from mailer.state.ledger import Ledger

DOCS = ROOT / "docs"
README_PATH = ROOT / "README.md"
PAGES = [README_PATH, *sorted(DOCS.glob("*.md"))]
BENCH_README = ROOT / "bench" / "README.md"  # linked from docs/benchmarks.md
SUBSTACK = FIXTURES / "substack"  # an export's files, as Substack's zip holds them
README = README_PATH.read_text(encoding="utf-8")
UNDOCUMENTED = {"--help", "--version"}  # click's own; `-h` is short, never checked


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """The text under a `## heading`, up to the next heading of level 1 or 2."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^#{{1,2}} |\Z)", text, re.M | re.S)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def _table_rows(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.startswith("|"))


# -- every command and option in the README's command table --------------------------------------


def _walk(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # mailer's group imports its commands by name
        command = group.get_command(ctx, name)
        assert command is not None, name
        yield " ".join((*path, name)), command
        if isinstance(command, click.Group):
            yield from _walk(command, (*path, name))


COMMANDS = list(_walk(mailer.cli.main))
OPTIONS = [
    (name, option)
    for name, command in [("", mailer.cli.main), *COMMANDS]  # "": the options before a command
    for param in command.params
    if isinstance(param, click.Option)
    for option in (*param.opts, *param.secondary_opts)
    if option.startswith("--") and option not in UNDOCUMENTED
]
COMMAND_TABLE = _table_rows(_section(README, "Commands"))


def test_the_walk_finds_the_command_tree() -> None:
    names = [name for name, _ in COMMANDS]
    assert {"send", "build", "subscribers", "subscribers check"} <= set(names)
    assert ("send", "--dry-run") in OPTIONS


@pytest.mark.parametrize("name,command", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_command_is_documented(name: str, command: click.Command) -> None:
    assert f"mailer {name}" in COMMAND_TABLE, f"README's command table lacks `mailer {name}`"
    assert (command.help or "").strip(), f"`mailer {name}` has no help text"


@pytest.mark.parametrize(
    "name,option", OPTIONS, ids=[f"mailer {name} {opt}".replace("  ", " ") for name, opt in OPTIONS]
)
def test_option_is_documented(name: str, option: str) -> None:
    # A whole option name: `--out` must not be satisfied by `--out-dir`.
    pattern = rf"(?<![\w-]){re.escape(option)}(?![\w-])"
    assert re.search(pattern, COMMAND_TABLE), f"README's command table lacks {option} ({name})"


# -- every setting in docs/configuration.md ------------------------------------------------------

SETTINGS = sorted(config.Settings().masked())  # every setting by its mailer.toml key
CONFIG_TABLE = _table_rows(_page("configuration.md"))


@pytest.mark.parametrize("key", SETTINGS)
def test_setting_is_in_the_reference(key: str) -> None:
    variable = config.env_name(key)
    rows = [row for row in CONFIG_TABLE.splitlines() if f"`{variable}`" in row]
    assert len(rows) == 1, f"docs/configuration.md: {variable} needs one row, has {len(rows)}"
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    toml = "—" if key in config.ENV_ONLY_KEYS else f"`{key}`"  # keys refused in mailer.toml
    assert cells[0] == toml, f"{variable}: its mailer.toml key is {toml}, not {cells[0]}"
    assert cells[3], f"{variable}: say what it means"


def test_the_reference_names_no_variable_that_does_not_exist() -> None:
    known = {config.env_name(key) for key in SETTINGS} | config.OWN_VARIABLES
    named = set(
        re.findall(r"\bMAILER_[A-Z0-9_]+", "\n".join(p.read_text(encoding="utf-8") for p in PAGES))
    )
    assert named <= known, f"no such variable: {sorted(named - known)}"


# -- the layout in docs/architecture.md is the tree ---------------------------------------------


def test_the_layout_names_every_package_folder_and_no_other() -> None:
    package = ROOT / "mailer"
    folders = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*")
        if path.is_dir() and path.name != "__pycache__" and any(path.iterdir())
    }
    packages = {f for f in folders if (package / f / "__init__.py").is_file()}
    named = set(re.findall(r"`mailer/([\w/]+?)/`", _page("architecture.md")))
    assert packages <= named, f"architecture.md does not name {sorted(packages - named)}"
    assert named <= folders, f"architecture.md names folders that do not exist: {named - folders}"


# -- what the documents show, and where they point ----------------------------------------------


def _without_blocks(text: str) -> str:
    """The text with fenced and indented code blocks left out."""
    text = re.sub(r"^( *)(`{3,}).*?^\1\2 *$", "", text, flags=re.M | re.S)
    return re.sub(r"^    .*$", "", text, flags=re.M)


def _prose(text: str) -> str:
    """The text outside code: code blocks and `code spans` left out."""
    return re.sub(r"(`+).+?\1", "", _without_blocks(text))


def _anchors(page: Path) -> set[str]:
    """The #fragments GitHub gives the page's headings."""
    headings = re.findall(r"^#+ (.+)$", _without_blocks(page.read_text(encoding="utf-8")), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_links_between_the_documents_resolve() -> None:
    for page in PAGES:
        text = _prose(page.read_text(encoding="utf-8"))
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", text):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            linked = (page.parent / target).resolve() if target else page
            assert linked.exists(), f"{page.name}: broken link to {target}"
            if anchor and linked.suffix == ".md":
                assert anchor in _anchors(linked), f"{page.name}: no #{anchor} in {linked.name}"


# Words for how the project was built rather than how it is used.
HISTORY = re.compile(r"\bissues? \d+\b|\bseed\b|\bcorpus\b|\bstop \d+\b", re.I)


@pytest.mark.parametrize("page", [*PAGES, BENCH_README], ids=[*(p.name for p in PAGES), "bench"])
def test_no_development_history(page: Path) -> None:
    found = [
        f"{page.name}:{number}: {line.strip()}"
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert not found, "\n".join(found)


# -- every example is real output ----------------------------------------------------------------

# What an example may run: nothing that installs or deletes. `cd DIR` is the session's own.
RUNNABLE = {"mailer", "echo", "cat", "cp", "head", "grep", "sort"}
SEPARATORS = {"|", "||", "&&", ";", "&"}  # each starts another program
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
ELLIPSIS = re.compile(r"…|\.\.\.")
FENCE = re.compile(r"^( *)(`{3,})(.*)$")


@dataclass(frozen=True)
class Block:
    """A fenced block of a page: its info string, its lines, and where it starts."""

    page: Path
    line: int
    info: str
    lines: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def kind(self) -> str:
        return (self.info.split() or [""])[0]

    def option(self, name: str) -> str | None:
        """The value of `name=VALUE` in the info string."""
        found = re.search(rf"\b{name}=(\S+)", self.info)
        return found.group(1) if found else None


def _blocks(page: Path) -> list[Block]:
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = opening.groups()
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i].removeprefix(indent))
            i += 1
        found.append(Block(page, i - len(body) + 1, info.strip(), tuple(body)))
        i += 1
    return found


def _examples(block: Block) -> list[tuple[str, list[str]]]:
    """(command, the lines it prints) for each `$ ` line of a console block.

    A command line ending in a backslash goes on in the next line, as in the shell.
    """
    examples: list[tuple[str, list[str]]] = []
    going_on = False
    for line in block.lines:
        if going_on:
            command = examples[-1][0]
            examples[-1] = (f"{command[:-1].rstrip()} {line.strip()}", [])
        elif line.startswith("$ "):
            examples.append((line[2:], []))
        else:
            assert examples, f"{block.where}: a console block starts with a `$ ` command"
            examples[-1][1].append(line)
        going_on = examples[-1][0].endswith("\\") and not examples[-1][1]
    return examples


def _programs(command: str) -> list[str]:
    """The programs a shell command line runs: the first word of each part of a pipeline or list,
    after any VAR=value."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""  # `#` inside a word is text to the shell (MAILER_ACCENT_COLOR=#0b62d6)
    programs: list[str] = []
    expecting = True
    for word in lexer:
        if word in SEPARATORS:
            expecting = True
        elif expecting and not ASSIGNMENT.match(word):
            programs.append(word)
            expecting = False
    return programs


def _pattern(shown: list[str]) -> re.Pattern[str]:
    parts = []
    for line in shown:
        if line.strip() in ("…", "..."):
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            pieces = ELLIPSIS.split(line.rstrip())
            parts.append(".*".join(re.escape(p) for p in pieces) + r"\n")
    return re.compile("".join(parts))


def _project(home: Path) -> Path:
    """A fresh project as a user has it after cloning: issues/, mailer.toml, the example list."""
    project = home / "newsletter"
    shutil.copytree(ROOT / "issues", project / "issues")
    for name in ("mailer.toml", "subscribers.example.csv", ".env.example"):
        shutil.copy(ROOT / name, project)
    (project / ".env").write_text(f"MAILER_SECRET={SECRET}\n", encoding="utf-8")
    return project


def _edit_toml(path: Path, lines: tuple[str, ...]) -> None:
    """Each `key = value` line set in the file as a user does it: over that key's line, commented
    out or not, else added at the end."""
    text = path.read_text(encoding="utf-8")
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue  # a blank or a comment in the page explains; it sets nothing
        key = line.partition("=")[0].strip()
        text, found = re.subn(
            rf"^#? *{re.escape(key)} *=.*$", lambda _, line=line: line, text, count=1, flags=re.M
        )
        if not found:
            text += line + "\n"
    path.write_text(text, encoding="utf-8")


def _bounce_mailbox(home: Path, project: Path) -> None:
    """issue-2 sent to every reader the bounce fixtures name; those fixtures in ~/Maildir."""
    # The fixtures return Message-IDs and VERP addresses made with the fixtures' secret.
    (project / ".env").write_text(f"MAILER_SECRET={FIXTURE_SECRET}\n", encoding="utf-8")
    with Ledger(project / ".mailer") as ledger:
        for reader in READERS:
            ledger.record("issue-2", reader, SENT, "250 ok")
    for sub in ("tmp", "new", "cur"):
        (home / "Maildir" / sub).mkdir(parents=True)
    for message in BOUNCES.glob("*.eml"):
        shutil.copy(message, home / "Maildir" / "new")


def _issue_2_went_out(home: Path, project: Path) -> None:
    """issue-2 sent: a copy accepted for a reader, in the ledger."""
    with Ledger(project / ".mailer") as ledger:
        ledger.record("issue-2", config.EXAMPLE_READER, SENT, "250 ok")


def _substack_export(home: Path, project: Path) -> None:
    """The Substack fixture zipped as Substack's Exports gives it, in the project."""
    with zipfile.ZipFile(project / "substack-export.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(SUBSTACK.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(SUBSTACK).as_posix())


# What a user would have done before this example, outside mailer: keyed by the command, done
# before the first example of a page that runs it.
SETUP: dict[str, Callable[[Path, Path], None]] = {
    "mailer bounces --maildir ~/Maildir --verbose": _bounce_mailbox,
    "mailer publish": _issue_2_went_out,
    "mailer import-posts substack-export.zip": _substack_export,
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int, server: subprocess.Popen[bytes]) -> bool:
    """Wait until the server accepts on the port (True) or has exited (False)."""
    deadline = time.monotonic() + 60  # a started aiosmtpd listens within a second or two
    while server.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


@contextmanager
def _mailbox_sink(page: str, home: Path) -> Iterator[dict[str, str]]:
    """The page's own `python -m aiosmtpd ... Mailbox DIR` on a free port, with DIR in the test's
    home; the page's port and DIR stand for those."""
    shown = re.search(r"^ *python (-m aiosmtpd -n -l 127\.0\.0\.1:(\d+) .* (\S+))$", page, re.M)
    assert shown, "the page shows no `python -m aiosmtpd ...` sink to start"
    arguments, shown_port, shown_dir = shown.groups()
    sink = str(home / "sink")
    log = home / "sink.log"
    for _ in range(3):  # the free port may be taken before aiosmtpd binds it
        port = str(_free_port())
        line = arguments.replace(f":{shown_port}", f":{port}").replace(shown_dir, sink)
        with log.open("wb") as out:
            server = subprocess.Popen(
                [sys.executable, *shlex.split(line)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            if _listening(int(port), server):
                yield {
                    f"127.0.0.1:{shown_port}": f"127.0.0.1:{port}",
                    f"smtp_port = {shown_port}": f"smtp_port = {port}",
                    shown_dir: sink,
                }
                return
        finally:
            server.terminate()
            server.wait(timeout=60)
    pytest.fail(f"aiosmtpd did not start: {arguments}\n{log.read_text(errors='replace')}")


@contextmanager
def _feed_server(page: str, home: Path) -> Iterator[dict[str, str]]:
    """tests/fixtures/feeds over HTTP on 127.0.0.1, a conditional GET of an unchanged one
    answered with 304; the page's 127.0.0.1:8765 stands for it."""
    state = FeedServer()
    for fixture in sorted(FEEDS.iterdir()):
        kind = "text/html; charset=utf-8" if fixture.suffix == ".html" else "application/xml"
        state.serve(f"/{fixture.name}", fixture.name, kind)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), feed_handler(state))
    state.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"127.0.0.1:8765": f"127.0.0.1:{state.port}"}
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _nothing(page: str, home: Path) -> Iterator[dict[str, str]]:
    yield {}


# What runs beside a page's examples while they run, as the page says: keyed by the page.
# Each yields what the page shows (a port, a folder) and what stands for it in the test.
BACKGROUND: dict[str, Callable[[str, Path], AbstractContextManager[dict[str, str]]]] = {
    "getting-started.md": _mailbox_sink,
    "publishing.md": _feed_server,
}


def _environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr interleaved as on a terminal
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _write_file(path: Path, lines: tuple[str, ...]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _substituted(block: Block, stand_ins: dict[str, str]) -> Block:
    lines = list(block.lines)
    for shown, real in stand_ins.items():
        lines = [line.replace(shown, real) for line in lines]
    return Block(block.page, block.line, block.info, tuple(lines))


@dataclass
class Session:
    """A page's commands, run in order as one user at a terminal runs them."""

    home: Path
    folder: Path  # `cd DIR` moves it for the page's next commands
    env: dict[str, str]
    status: int = 0  # the previous command's, for `$?`
    set_up: set[str] = field(default_factory=set)

    def write(self, block: Block) -> None:
        """Write or edit the file a block names, where it appears."""
        for option, write in (("file", _write_file), ("edit", _edit_toml)):
            target = block.option(option)
            if target:
                (self.folder / target).parent.mkdir(parents=True, exist_ok=True)
                write(self.folder / target, block.lines)

    def check(self, block: Block, command: str, shown: list[str]) -> None:
        """Run the command; fail unless it prints what the page shows."""
        words = shlex.split(command)
        if words[0] == "cd":
            assert len(words) == 2 and not shown, f"{block.where}: `cd DIR` alone, printing nothing"
            self.folder = (self.folder / words[1]).resolve()
            assert self.folder.is_dir(), f"{block.where}: no folder {words[1]}"
            self.status = 0
            return
        for program in _programs(command):
            assert program in RUNNABLE, f"{block.where}: `{command}` is not an example to run"
        if command in SETUP and command not in self.set_up:
            SETUP[command](self.home, self.folder)
            self.set_up.add(command)
        ran = subprocess.run(
            ["bash", "-c", f"(exit {self.status}); {command}"],
            cwd=self.folder,
            env=self.env,
            stdin=subprocess.DEVNULL,  # nobody at a keyboard to answer
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )
        self.status = ran.returncode
        output = "".join(line.rstrip() + "\n" for line in ran.stdout.splitlines())
        if not _pattern(shown).fullmatch(output):
            pytest.fail(
                f"{block.where}: `{command}` prints something else.\n"
                "--- shown:\n" + "\n".join(shown) + "\n--- printed:\n" + output
            )


@pytest.mark.slow  # runs every documented command for real
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_examples_are_real_output(page: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    session = Session(home, _project(home), _environment(home))
    beside = BACKGROUND.get(page.name, _nothing)
    with beside(page.read_text(encoding="utf-8"), home) as stand_ins:
        for block in (_substituted(b, stand_ins) for b in _blocks(page)):
            session.write(block)
            if block.kind == "console":
                for command, shown in _examples(block):
                    session.check(block, command, shown)


def test_every_setup_has_its_example() -> None:
    commands = {
        command
        for page in PAGES
        for block in _blocks(page)
        if block.kind == "console"
        for command, _ in _examples(block)
    }
    assert set(SETUP) <= commands


def test_every_background_has_its_page() -> None:
    assert set(BACKGROUND) <= {page.name for page in PAGES}


def test_a_command_goes_on_after_a_backslash() -> None:
    block = Block(
        README_PATH, 1, "console", ("$ mailer init x \\", "    --url u", "created", "$ cd x")
    )
    assert _examples(block) == [("mailer init x --url u", ["created"]), ("cd x", [])]


def test_every_program_of_a_command_line_is_checked() -> None:
    line = "MAILER_ACCENT_COLOR=#f5a623 mailer build x; echo $? && grep -E '^(To|From):' a | sort"
    assert _programs(line) == ["mailer", "echo", "grep", "sort"]
    assert _programs("mailer build x && rm -rf build")[-1] == "rm"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_shown_commands_with_output_are_examples(page: Path) -> None:
    """A `$ ` prompt anywhere but in a console block would be output nobody checks."""
    checked = {
        block.line + offset
        for block in _blocks(page)
        if block.info.split()[:1] == ["console"]
        for offset in range(len(block.lines))
    }
    outside = [
        f"{page.name}:{number}: {line.strip()}"
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if line.lstrip().startswith("$ ") and number not in checked
    ]
    assert not outside, "\n".join(outside)


def test_the_matcher_elides_lines_and_text() -> None:
    pattern = _pattern(["built … in … ms", "…", "done"])
    assert pattern.fullmatch("built a/b in 12 ms\nx\ny\ndone\n")
    assert pattern.fullmatch("built a/b in 12 ms\ndone\n")
    assert not pattern.fullmatch("built a/b in 12 ms\ndone\nmore\n")
    assert not pattern.fullmatch("built a/b in 12 s\ndone\n")
