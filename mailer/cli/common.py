"""What every command shares: the project's settings, warnings, and a few ways of printing."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mailer.config import BOUNDS, Settings
from mailer.errors import EXIT_ABORTED, EXIT_OK, ConfigError, MailerError, printable
from mailer.values import Bounds
from mailer.when import now as current_time
from mailer.when import parse_when

if TYPE_CHECKING:  # only annotations: importing render would load MJML for every command
    from mailer.compose.issue import Notice
    from mailer.compose.render import Email


@dataclass
class Context:
    """What every command gets: the project's settings, read once."""

    settings: Settings


pass_ctx = click.make_pass_decorator(Context)


class Bounded(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A flag's number in a sane range; outside it one line names the flag and the range
    (exit 2), as for a setting, rather than click's usage text."""

    name = "number"

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return self.bounds.parse(value)
        except (ValueError, ConfigError):
            flag = max(param.opts, key=len) if param is not None else "a value"
            raise ConfigError(f"{flag} must be {self.bounds.describe()}, got {value!r}") from None


def bounded(setting: str) -> Bounded:
    """The flag for a setting takes what the setting takes."""
    return Bounded(BOUNDS[setting])


def span(setting: str) -> str:
    """A setting's range for --help: '1 to 100'."""
    low, high = BOUNDS[setting].span()
    return f"{low} to {high}"


def warn(text: str) -> None:
    click.secho(f"warning: {printable(text)}", fg="yellow", err=True)


def print_notices(email: Email, fold: bool = True) -> None:
    """Warnings; unless `build` asks for all, runs of one kind fold into one line."""
    by_code: dict[str, list[Notice]] = {}
    for notice in email.notices:
        by_code.setdefault(notice.code, []).append(notice)
    for notices in by_code.values():
        if len(notices) <= 3 or not fold:
            for notice in notices:
                warn(str(notice))
            continue
        lines = ", ".join(str(n.line) for n in notices if n.line)
        what = notices[0].message.split(":")[0]
        warn(f"{len(notices)} times: {what} (lines {lines}; `mailer build` lists them)")


# True in the `mailer` script (LazyGroup.__call__), whose process ends with its one command;
# not under click's CliRunner, which runs command after command in one process.
_process_ends_with_command = False


def ends_process() -> None:
    """Say that this process ends when the command does (see collector_paused)."""
    global _process_ends_with_command
    _process_ends_with_command = True


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection for a while: while a command's modules import, and while
    `build` renders and lints one issue. MJML, premailer, cssutils, lxml and Jinja create tens
    of thousands of objects then that stay alive, and the collector would walk them again and
    again for nothing. What a build leaves as cyclic garbage (~6,000 objects, under 1 MB) is
    collected afterwards: in one pass when the collector resumes, or, in the `mailer` script,
    never: there everything alive at the end of a pause is frozen (gc.freeze), as it lives
    until the process ends or is garbage the exit would only sweep (~25 ms of a cold build).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _process_ends_with_command:
            gc.freeze()
        if enabled:
            gc.enable()


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; without one, refuse unless --yes.

    "n" is an answer, not a failure: "not sent", exit 0. Ctrl-C or end of input at the
    question: "aborted: nothing was sent", exit 130 (1 would read as "some readers failed").
    """
    if yes:
        return
    if not sys.stdin.isatty():
        raise MailerError(
            "refusing a real send without a terminal to confirm on",
            hint="add --yes (cron), or --dry-run to see what would happen",
        )
    try:
        answer = click.confirm(question, default=False)
    except click.Abort:
        click.echo()  # end the question's line
        click.echo("aborted: nothing was sent", err=True)
        raise click.exceptions.Exit(EXIT_ABORTED) from None
    if not answer:
        click.echo("not sent")
        raise click.exceptions.Exit(EXIT_OK)


def now_option(text: str | None) -> datetime:
    """--now, else MAILER_NOW, else the clock."""
    try:
        return parse_when(text) if text else current_time()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--now" if text else "MAILER_NOW") from None


def rate_text(rate: float) -> str:
    return "unlimited" if rate == float("inf") else f"{rate:g}/s"


def shown(path: Path, root: Path) -> Path:
    """A path relative to the project when it is inside it."""
    return path.relative_to(root) if path.is_relative_to(root) else path


def human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
