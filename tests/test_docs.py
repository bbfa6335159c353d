"""The documentation holds: README.md's command table names every command and option, docs/
names every setting and every package folder, and every example shown as output is the output
of running it.

Examples are fenced ```console blocks: each `$ ` line is a command, the lines after it what it
prints (stdout and stderr, as a terminal shows them). A line that is only `…` stands for any
number of lines; `…` inside a line for any text. The commands of one page run in order in one
fresh project (issues/, mailer.toml, the example list, a .env holding MAILER_SECRET), so a page
can make a key and then show what uses it. A fenced block whose info string says
`file=PATH` is written to PATH in that project where it appears.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from conftest import FIXTURE_SECRET, ROOT, SECRET, SENT
from test_bounces import BOUNCES, READERS

import mailer.cli
from mailer import config
from mailer.state.ledger import Ledger

DOCS = ROOT / "docs"
README_PATH = ROOT / "README.md"
PAGES = [README_PATH, *sorted(DOCS.glob("*.md"))]
BENCH_README = ROOT / "bench" / "README.md"  # linked from docs/benchmarks.md
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

RUNNABLE = {"mailer", "echo", "cat", "cp"}  # what an example may run: nothing that installs
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
    """(command, the lines it prints) for each `$ ` line of a console block."""
    examples: list[tuple[str, list[str]]] = []
    for line in block.lines:
        if line.startswith("$ "):
            examples.append((line[2:], []))
        else:
            assert examples, f"{block.where}: a console block starts with a `$ ` command"
            examples[-1][1].append(line)
    return examples


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


# What a user would have done before this example, outside mailer: keyed by the command.
SETUP: dict[str, Callable[[Path, Path], None]] = {
    "mailer bounces --maildir ~/Maildir --verbose": _bounce_mailbox,
}


def _environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr interleaved as on a terminal
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_examples_are_real_output(page: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    project = _project(home)
    env = _environment(home)
    for block in _blocks(page):
        target = re.search(r"\bfile=(\S+)", block.info)
        if target:
            (project / target.group(1)).parent.mkdir(parents=True, exist_ok=True)
            (project / target.group(1)).write_text("\n".join(block.lines) + "\n", "utf-8")
        if block.info.split()[:1] != ["console"]:
            continue
        for command, shown in _examples(block):
            program = re.sub(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*", "", command).split()[0]
            assert program in RUNNABLE, f"{block.where}: `{command}` is not an example to run"
            if command in SETUP:
                SETUP[command](home, project)
            ran = subprocess.run(
                ["bash", "-c", command],
                cwd=project,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=120,
            )
            output = "".join(line.rstrip() + "\n" for line in ran.stdout.splitlines())
            if not _pattern(shown).fullmatch(output):
                pytest.fail(
                    f"{block.where}: `{command}` prints something else.\n"
                    "--- shown:\n" + "\n".join(shown) + "\n--- printed:\n" + output
                )


def test_every_setup_has_its_example() -> None:
    commands = {
        command
        for page in PAGES
        for block in _blocks(page)
        if block.info.split()[:1] == ["console"]
        for command, _ in _examples(block)
    }
    assert set(SETUP) <= commands


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
