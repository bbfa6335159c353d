"""Hostile numbers, URLs, .env lines and servers: a real `mailer` process, its output read back.

Every numeric setting and flag has a sane range (config.BOUNDS for settings, the flags' own);
outside it, NaN or infinite, the command stops before doing anything: exit 2 and one line
naming the setting or flag and the range. A malformed database_url is one line with the
password masked, for every command. A line of .env python-dotenv cannot parse is one of
mailer's warnings, naming the file and the line. A server that answers 421 before any mail
(at the greeting, at EHLO) says "try later": exit 75 with its reply.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from conftest import DEFERRED, SENT, smtp_env
from postfix import requires_postfix, running_postfix
from smtp_server import SMTPServer

import mailer.cli
from mailer import config
from mailer.state.ledger import Ledger

pytestmark = pytest.mark.slow  # real `mailer` processes

MAILER = Path(sys.executable).with_name("mailer")
REPO = Path(__file__).resolve().parents[1]
PASSWORD = "hunter2-Pa55"
SETTINGS_PAGE = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")


def run(
    root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    environ["MAILER_SECRET"] = "hostile-settings-secret-0123"
    environ.update(env or {})
    return subprocess.run(
        [str(MAILER), "-C", str(root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """issue-2, mailer.toml and two readers; the path as mailer prints it (resolved)."""
    root = tmp_path.resolve() / "news"
    (root / "issues").mkdir(parents=True)
    shutil.copy(REPO / "issues" / "issue-2.md", root / "issues")
    shutil.copy(REPO / "mailer.toml", root)
    (root / "subscribers.csv").write_text(
        "email,name\nada@example.com,Ada\nbob@example.com,Bob\n", encoding="utf-8"
    )
    return root


# -- every numeric setting has a range -----------------------------------------------------

# (setting, a value past its range, the range as the error and docs/configuration.md say it)
SETTINGS = [
    ("smtp_port", "65536", "a whole number from 1 to 65535"),
    ("smtp_port", "0", "a whole number from 1 to 65535"),
    ("smtp_timeout", "1e10", "a number of seconds from 1 to 3600"),
    ("smtp_timeout", "1e308", "a number of seconds from 1 to 3600"),
    ("smtp_timeout", "nan", "a number of seconds from 1 to 3600"),
    ("pipeline_depth", "3", "a whole number from 1 to 2"),
    ("claim_timeout", "2d", "a duration from 1s to 24h"),
    ("rate", "200000/s", "a rate from 1/h to 100000/s (or off)"),
    ("rate", "0.5/h", "a rate from 1/h to 100000/s (or off)"),
    ("batch_size", "100001", "a whole number from 1 to 100000"),
    ("pause", "inf", "a number of seconds from 0 to 3600"),
    ("pause", "3601", "a number of seconds from 0 to 3600"),
    ("connections", "101", "a whole number from 1 to 100"),
    ("connections", "0", "a whole number from 1 to 100"),
    ("max_attempts", "101", "a whole number from 1 to 100"),
    ("max_attempts", "0", "a whole number from 1 to 100"),
    ("retry_delay", "1e12", "a number of seconds from 0 to 86400"),
    ("retry_delay", "-Infinity", "a number of seconds from 0 to 86400"),
    ("max_late", "366d", "a duration from 1m to 365d"),
    ("max_late", "59s", "a duration from 1m to 365d"),
    ("retry_window", "99999999999999999999d", "a duration from 0s to 24h"),
    ("give_up_after", "366d", "a duration from 1m to 365d"),
    ("give_up_after", "30s", "a duration from 1m to 365d"),
    ("circuit_breaker", "1001", "a whole number from 1 to 1000"),
    ("circuit_breaker", "0", "a whole number from 1 to 1000"),
    ("soft_bounce_limit", "101", "a whole number from 1 to 100"),
    ("confirm_within", "30s", "a duration from 1m to 365d"),
    ("signup_rate", "0", "a whole number from 1 to 10000"),
    ("confirm_per_hour", "1e9", "a whole number from 1 to 100000"),
    ("bounce_imap_port", "70000", "a whole number from 1 to 65535"),
]
NUMERIC = (int, float, timedelta)


def test_every_numeric_setting_has_a_range_and_is_probed() -> None:
    numeric = {
        f.name
        for f in fields(config.Settings)
        if isinstance(f.default, NUMERIC) and not isinstance(f.default, bool)
    }
    assert numeric == set(config.BOUNDS)
    assert {name for name, _, _ in SETTINGS} == numeric


@pytest.mark.parametrize(
    ("name", "value", "what"), SETTINGS, ids=[f"{n}={v}" for n, v, _ in SETTINGS]
)
def test_a_setting_past_its_range_is_one_line_exit_2(
    root: Path, name: str, value: str, what: str
) -> None:
    variable = config.env_name(name)
    done = run(root, "config", env={variable: value})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr == (
        f"Error: setting {name} (from environment) must be {what}, got {value!r}\n"
        f"  hint: set it in mailer.toml or as {variable}\n"
    )


@pytest.mark.parametrize("name", sorted({name for name, _, _ in SETTINGS}))
def test_the_readme_gives_each_settings_range(name: str) -> None:
    low, high = config.BOUNDS[name].span()
    [row] = [line for line in SETTINGS_PAGE.splitlines() if line.startswith(f"| `{name}` |")]
    assert f"{low} to {high}" in row, row


@pytest.mark.parametrize("value", ["1e10", "1e308"])
def test_an_endless_smtp_timeout_sends_nothing(
    root: Path, smtp_server: SMTPServer, value: str
) -> None:
    env = {**smtp_env(smtp_server), "MAILER_SMTP_TIMEOUT": value}
    done = run(root, "send", "issue-2", "--yes", env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[0] == (
        f"Error: setting smtp_timeout (from environment) must be a number of seconds"
        f" from 1 to 3600, got {value!r}"
    )
    assert "Traceback" not in done.stderr
    assert smtp_server.connections == 0


# -- every numeric flag has a range --------------------------------------------------------

SEND = ["send", "issue-2", "--dry-run"]
# (command line, the flag, its value, the range)
FLAGS = [
    (SEND, "--rate", "1e9/s", "a rate from 1/h to 100000/s (or off)"),
    (SEND, "--rate", "0.1/h", "a rate from 1/h to 100000/s (or off)"),
    (SEND, "--batch-size", "0", "a whole number from 1 to 100000"),
    (SEND, "--batch-size", "1e3", "a whole number from 1 to 100000"),
    (SEND, "--pause", "nan", "a number of seconds from 0 to 3600"),
    (SEND, "--pause", "inf", "a number of seconds from 0 to 3600"),
    (SEND, "--connections", "101", "a whole number from 1 to 100"),
    (SEND, "--max-attempts", "0", "a whole number from 1 to 100"),
    (SEND, "--retry-delay", "1e12", "a number of seconds from 0 to 86400"),
    (SEND, "--retry-delay", "-1", "a number of seconds from 0 to 86400"),
    (["serve"], "--port", "70000", "a whole number from 0 to 65535"),
    (["serve"], "--port", "-1", "a whole number from 0 to 65535"),
    (["preview", "issue-2", "--no-open"], "--port", "65536", "a whole number from 0 to 65535"),
    (["serve"], "--request-timeout", "nan", "a number of seconds from 0.5 to 3600"),
    (["serve"], "--request-timeout", "inf", "a number of seconds from 0.5 to 3600"),
    (["serve"], "--max-connections", "15", "a whole number from 16 to 1000000"),
    (["digest", "http://127.0.0.1:9/feed.xml"], "--max", "0", "a whole number from 1 to 1000"),
]


def _options(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Option]]:
    """(command, option) for every option of every command, nested groups included."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        for param in command.params:
            if isinstance(param, click.Option):
                yield " ".join((*path, name)), param
        if isinstance(command, click.Group):
            yield from _options(command, (*path, name))


def test_every_numeric_flag_has_a_range_its_help_gives_and_is_probed() -> None:
    from mailer.cli.common import Bounded

    bounded = {}
    for command, option in _options(mailer.cli.main):
        # No flag takes a bare int or float: each number goes through a range.
        plain = (click.types.IntParamType, click.types.FloatParamType)
        assert not isinstance(option.type, plain), (command, option.opts)
        if isinstance(option.type, Bounded):
            low, high = option.type.bounds.span()
            assert f"({low} to {high}" in (option.help or ""), (command, option.help)
            bounded[command, max(option.opts, key=len)] = option
    probed = {(args[0], flag) for args, flag, _, _ in FLAGS}
    assert probed == set(bounded)


@pytest.mark.parametrize(
    ("args", "flag", "value", "what"), FLAGS, ids=[f"{a[0]} {f} {v}" for a, f, v, _ in FLAGS]
)
def test_a_flag_past_its_range_is_one_line_exit_2(
    root: Path, args: list[str], flag: str, value: str, what: str
) -> None:
    # 30 s: a server that accepted the value would serve until killed.
    done = run(root, *args, flag, value, timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr == f"Error: {flag} must be {what}, got {value!r}\n"


def test_retry_delay_past_its_range_sends_nothing(root: Path, smtp_server: SMTPServer) -> None:
    smtp_server.defer.add("bob@example.com")
    done = run(root, "send", "issue-2", "--yes", "--retry-delay", "1e12", env=smtp_env(smtp_server))
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "Error: --retry-delay must be a number of seconds from 0 to 86400, got '1e12'\n"
    )
    assert smtp_server.connections == 0
    assert not (root / ".mailer" / "ledger.db").exists()


def test_the_longest_retry_delay_records_the_451(root: Path, smtp_server: SMTPServer) -> None:
    smtp_server.defer.add("bob@example.com")
    now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    env = {**smtp_env(smtp_server), "MAILER_NOW": now.isoformat(), "MAILER_RATE": "off"}
    done = run(root, "send", "issue-2", "--yes", "--retry-delay", "86400", env=env)
    assert done.returncode == 75, done.stdout + done.stderr
    assert "issue-2: sent 1, deferred 1, failed 0" in done.stdout
    with Ledger(root / ".mailer") as ledger:
        rows = {d.email: d for d in ledger.deliveries("issue-2")}
    assert rows["ada@example.com"].state == SENT
    bob = rows["bob@example.com"]
    assert (bob.state, bob.attempts, bob.last_reply) == (DEFERRED, 1, "451 4.7.1 Try again later")
    assert bob.next_try_at == now + timedelta(days=1)


# -- database_url --------------------------------------------------------------------------

MALFORMED = f"postgresql://mailer:{PASSWORD}@[::1:25432/news"
EVERY_COMMAND = {
    "build": ["build", "issue-2"],
    "lint": ["lint", "issue-2"],
    "bounces": ["bounces", "--mbox", "bounces.mbox"],
    "preview": ["preview", "issue-2", "--no-open"],
    "send": ["send", "issue-2", "--dry-run"],
    "schedule": ["schedule", "--list"],
    "status": ["status", "issue-2"],
    "subscribers": ["subscribers", "check"],
    "unsubscribe": ["unsubscribe", "ada@example.com"],
    "suppressed": ["suppressed"],
    "serve": ["serve"],
    "config": ["config"],
    "dkim": ["dkim", "keygen"],
    "dns": ["dns"],
    "backup": ["backup", "copy.db"],
    "publish": ["publish"],
    "digest": ["digest", "http://127.0.0.1:9/feed.xml"],
    "import-posts": ["import-posts", "export.zip"],
    "form": ["form"],
}
# Commands that read no project settings: `mailer init` writes a new project.
NO_SETTINGS = {"init"}


def test_every_command_is_probed() -> None:
    assert set(EVERY_COMMAND) | NO_SETTINGS == set(mailer.cli.COMMANDS)


@pytest.mark.parametrize("command", sorted(EVERY_COMMAND))
def test_a_malformed_database_url_is_one_line_for_every_command(root: Path, command: str) -> None:
    done = run(root, *EVERY_COMMAND[command], env={"MAILER_DATABASE_URL": MALFORMED}, timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr == (
        "Error: database_url must be a URL like postgresql://user@host:5432/db,"
        " got 'postgresql://mailer:********@[::1:25432/news' (invalid IPv6 URL)\n"
    )


@pytest.mark.parametrize(
    ("where", "url", "shown", "reason"),
    [
        (".env", MALFORMED, "postgresql://mailer:********@[::1:25432/news", "invalid IPv6 URL"),
        (
            ".env",
            f"postgresql://mailer:{PASSWORD}@db:99999/news",
            "postgresql://mailer:********@db:99999/news",
            "port out of range 0-65535",
        ),
        (
            ".env",
            f"postgresql://mailer:{PASSWORD}@db:5432x/news",
            "postgresql://mailer:********@db:5432x/news",
            "port could not be cast to integer value as '5432x'",
        ),
        ("mailer.toml", "postgresql://mailer@[::1/news", "postgresql://mailer@[::1/news", ""),
    ],
)
def test_a_malformed_database_url_from_a_file(
    root: Path, where: str, url: str, shown: str, reason: str
) -> None:
    if where == ".env":
        (root / ".env").write_text(f"MAILER_DATABASE_URL={url}\n", encoding="utf-8")
    else:
        with (root / "mailer.toml").open("a", encoding="utf-8") as toml:
            toml.write(f'database_url = "{url}"\n')
    done = run(root, "status", "issue-2")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        f"Error: database_url must be a URL like postgresql://user@host:5432/db,"
        f" got {shown!r} ({reason or 'invalid IPv6 URL'})\n"
    )
    assert PASSWORD not in done.stdout + done.stderr


def test_a_malformed_database_url_with_a_password_in_mailer_toml(root: Path) -> None:
    with (root / "mailer.toml").open("a", encoding="utf-8") as toml:
        toml.write(f'database_url = "{MALFORMED}"\n')
    done = run(root, "config")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines()[0] == (
        f"Error: {root}/mailer.toml: database_url holds a password, and this file is committed"
    )
    assert PASSWORD not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


# -- .env ----------------------------------------------------------------------------------


def test_an_unparsable_env_line_is_one_warning_naming_file_and_line(root: Path) -> None:
    (root / ".env").write_text(
        "MAILER_RATE=5/s\nthis line sets nothing\nMAILER_BATCH_SIZE=7\n'unterminated\n",
        encoding="utf-8",
    )
    done = run(root, "config")
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        f"warning: {root}/.env:2: not NAME=value: this line is ignored\n"
        f"warning: {root}/.env:4: not NAME=value: this line is ignored\n"
    )
    assert re.search(r"^rate += '5/s' +# MAILER_RATE, from \.env$", done.stdout, re.M)
    assert re.search(r"^batch_size += '7' +# MAILER_BATCH_SIZE, from \.env$", done.stdout, re.M)


# -- 421 before any mail -------------------------------------------------------------------

BUSY = f"421 4.3.2 {PASSWORD} is not welcome now, try later"


@pytest.mark.parametrize("stage", ["greeting", "ehlo_reply"])
def test_421_before_any_mail_is_try_later(root: Path, smtp_server: SMTPServer, stage: str) -> None:
    setattr(smtp_server, stage, BUSY)
    env = {
        **smtp_env(smtp_server),
        "MAILER_SMTP_USER": "news",
        "MAILER_SMTP_PASSWORD": PASSWORD,
        "MAILER_RATE": "off",
    }
    done = run(root, "send", "issue-2", "--yes", env=env)
    assert done.returncode == 75, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert errors == [
        f"Error: the SMTP server at 127.0.0.1:{smtp_server.port} asks to try later:"
        " 421 4.3.2 ******** is not welcome now, try later"
    ]
    assert PASSWORD not in done.stdout + done.stderr
    assert smtp_server.connections == 1 and smtp_server.received == []
    with Ledger(root / ".mailer") as ledger:
        assert list(ledger.deliveries("issue-2")) == []


@requires_postfix[0]
@requires_postfix[1]
@pytest.mark.parametrize(
    ("settings", "files", "rejected"),
    [
        (
            ["smtpd_client_restrictions = check_client_access cidr:{config}/clients"],
            {"clients": "127.0.0.0/8 421 4.7.0 Busy: try again later\n"},
            "<localhost[127.0.0.1]>: Client host rejected",
        ),
        (
            ["smtpd_helo_restrictions = check_helo_access regexp:{config}/helo"],
            {"helo": "/./ 421 4.7.0 Busy: try again later\n"},
            "Helo command rejected",
        ),
    ],
    ids=["greeting", "ehlo"],
)
def test_postfix_421_before_any_mail_is_try_later(
    root: Path, settings: list[str], files: dict[str, str], rejected: str
) -> None:
    # smtpd_delay_reject = no: the restriction answers at connect (or EHLO), not at RCPT.
    with running_postfix(["smtpd_delay_reject = no", *settings], files) as postfix:
        env = {
            "MAILER_SMTP_HOST": "127.0.0.1",
            "MAILER_SMTP_PORT": str(postfix.port),
            "MAILER_SMTP_SECURITY": "none",
            "MAILER_RATE": "off",
        }
        done = run(root, "send", "issue-2", "--yes", env=env)
        assert postfix.delivered() == []
    assert done.returncode == 75, done.stdout + done.stderr
    [error] = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    prefix = f"Error: the SMTP server at 127.0.0.1:{postfix.port} asks to try later: 421 4.7.0 "
    assert error.startswith(prefix), error
    assert rejected in error and error.endswith(": Busy: try again later")
