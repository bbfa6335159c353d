"""Errors a user can cause: each reaches the terminal as one line and an exit code."""

from __future__ import annotations

import errno
import re

import click

# Exit codes (sysexits.h where one fits); the README's table lists them.
EXIT_OK = 0
EXIT_FAILED = 1  # some recipients failed permanently
EXIT_USAGE = 2  # bad flag, bad configuration
EXIT_DATA = 65  # bad input: issue, template, subscriber list
EXIT_IOERR = 74  # the ledger on disk is damaged: restore a backup
EXIT_UNAVAILABLE = 69  # the SMTP server cannot be reached
EXIT_TEMPFAIL = 75  # try again later: recipients deferred, another run holds the lock
EXIT_NOPERM = 77  # the SMTP server refused our credentials
EXIT_ABORTED = 130  # ctrl-C (or end of input) at a question: nothing was done (128 + SIGINT)


# What must never reach a terminal raw from input: C0 and C1 controls (CR, LF, NUL, ESC...),
# DEL, Unicode line and paragraph separators, zero-width and bidirectional controls. Any of
# them could end a message's line early, forge another line, or reorder what is shown.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def printable(text: str) -> str:
    """Text as one terminal line: every control or separator character shown escaped (\\r)."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class MailerError(click.ClickException):
    """Base of every error meant for the user: no traceback, a clear line, an exit code."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def format_message(self) -> str:
        message = printable(self.message)
        return message if not self.hint else f"{message}\n  hint: {printable(self.hint)}"


class ConfigError(MailerError):
    """A setting is missing or has the wrong form."""

    exit_code = EXIT_USAGE


class InputError(MailerError):
    """An input file is wrong; the message names the file and, where known, the line or key."""

    exit_code = EXIT_DATA

    def __init__(
        self,
        message: str,
        *,
        path: object | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line else f"{path}: "
        super().__init__(where + message, hint=hint)
        self.path = path
        self.line = line


class TemplateError(InputError):
    """A template is broken or uses a variable that does not exist."""


class PreflightError(MailerError):
    """The issue is not fit to send; every reason is listed."""

    exit_code = EXIT_DATA

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("refusing to send: " + "; ".join(reasons))
        self.reasons = reasons

    def format_message(self) -> str:
        return "refusing to send:\n" + "\n".join(f"  - {printable(r)}" for r in self.reasons)


class SMTPUnavailable(MailerError):
    """The server could not be reached or dropped us before anyone was marked."""

    exit_code = EXIT_UNAVAILABLE


class SMTPTryLater(MailerError):
    """The server answered but will not take mail now (421 and other 4xx at the greeting,
    EHLO, STARTTLS or AUTH): nobody was marked, a later run sends."""

    exit_code = EXIT_TEMPFAIL


class SMTPAuthError(MailerError):
    """The server refused the login."""

    exit_code = EXIT_NOPERM


class LockedError(MailerError):
    """Another mailer run holds the lock on this issue."""

    exit_code = EXIT_TEMPFAIL


class DiskFull(MailerError):
    """The disk under the state (or the output) is full: nothing was lost, try again later."""

    exit_code = EXIT_TEMPFAIL


FULL = (errno.ENOSPC, errno.EDQUOT)


def io_error(path: object, what: str, exc: OSError) -> MailerError:
    """One line for an OS error on a state file: DiskFull (75) when the disk is full."""
    message = f"{path}: {what}: {exc.strerror or exc}"
    if exc.errno in FULL:
        return DiskFull(message, hint="free some space there, then run the same command again")
    return MailerError(message)


class StoreDamaged(MailerError):
    """The ledger failed an integrity check: its record cannot be trusted until restored."""

    exit_code = EXIT_IOERR
