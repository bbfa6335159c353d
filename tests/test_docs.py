"""README.md documents every command and every option of `mailer` (sqlite-utils style)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

import mailer.cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
UNDOCUMENTED = {"--help", "--version"}  # click's own; `-h` is short, never checked


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


def test_the_walk_finds_the_command_tree() -> None:
    names = [name for name, _ in COMMANDS]
    assert {"send", "build", "subscribers", "subscribers check"} <= set(names)
    assert ("send", "--dry-run") in OPTIONS


@pytest.mark.parametrize("name,command", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_command_is_documented(name: str, command: click.Command) -> None:
    assert f"mailer {name}" in README, f"README.md does not mention `mailer {name}`"
    assert (command.help or "").strip(), f"`mailer {name}` has no help text"


@pytest.mark.parametrize(
    "name,option", OPTIONS, ids=[f"mailer {name} {opt}".replace("  ", " ") for name, opt in OPTIONS]
)
def test_option_is_documented(name: str, option: str) -> None:
    # A whole option name: `--out` must not be satisfied by `--out-dir`.
    pattern = rf"(?<![\w-]){re.escape(option)}(?![\w-])"
    assert re.search(pattern, README), f"README.md does not mention {option} (mailer {name})"
