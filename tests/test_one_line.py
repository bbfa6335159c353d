"""Bad input gets one clear line and the right exit code: never a traceback, never a secret.

Each test runs the real `mailer` command (click's CliRunner on mailer.cli.main) in a project
made by conftest's `new_project`; the SMTP ones talk to the aiosmtpd server of smtp_server.py.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import click.testing
import pytest
from click.testing import Result
from conftest import MailerCli, smtp_env
from smtp_server import SMTPServer

from mailer.config import BOUNDS

pytestmark = pytest.mark.usefixtures("render_memo")

SUBSCRIBERS = "email,name\nada@example.com,Ada\nzoe@example.com,Zoë\n"
READERS = ["ada@example.com", "zoe@example.com"]
FAST = ["--rate", "off", "--retry-delay", "0.02"]

Run = Callable[..., Result]


@pytest.fixture
def project(new_project: Callable[[str], Path]) -> Path:
    return new_project(SUBSCRIBERS).resolve()


@pytest.fixture
def cli(project: Path, mailer_cli: MailerCli) -> Run:
    """Run `mailer -C PROJECT ARGS...`; a traceback fails the test whatever the exit code."""

    def run(
        *args: str,
        server: SMTPServer | None = None,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> Result:
        full_env = smtp_env(server) if server else smtp_env(port=1)
        full_env.update(env or {})
        return mailer_cli(project, *args, env=full_env, input=input)

    return run


def error_line(result: Result) -> str:
    """The one 'Error: ...' line (a 'hint:' line may follow it)."""
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


def parts(message: EmailMessage) -> tuple[str, str]:
    """(text, html) of a received message, decoded."""
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


# -- 1. slot syntax in an issue's own text -------------------------------------------------

SLOT_ISSUE = """\
---
title: "Slots like %%mailer:0%% in a title"
---
Ours are written %%mailer:99%% and %%mailer:0%%, also `%%mailer:1%%` in code.

<a href="https://example.org/?q=%%mailer:0%%">a raw link</a>
"""


def test_slot_syntax_in_an_issue_reaches_every_reader_as_written(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    (project / "issues" / "slots.md").write_text(SLOT_ISSUE, encoding="utf-8")
    result = cli("send", "slots", "--yes", *FAST, server=smtp_server)
    assert result.exit_code == 0, result.output  # was: IndexError (slot 99 does not exist)
    assert "slots: sent 2, deferred 0, failed 0" in result.output
    assert sorted(smtp_server.by_recipient()) == READERS
    for received in smtp_server.received:
        message = received.message()
        text, html = parts(message)
        assert message["Subject"] == "Slots like %%mailer:0%% in a title"
        for part in (text, html):
            assert "Ours are written %%mailer:99%% and %%mailer:0%%, also" in part
            assert "%%mailer:1%%" in part
            assert "Slots like %%mailer:0%% in a title" in part
            assert "\ue025" not in part  # the escape never reaches a reader
        assert 'href="https://example.org/?q=%%mailer:0%%"' in html
        # Slot 0 is the unsubscribe link: the literal text is not this reader's link.
        assert html.count("/unsubscribe?token=") == text.count("/unsubscribe?token=") == 1


def test_slot_syntax_in_an_issue_in_build_and_dry_run(cli: Run, project: Path) -> None:
    (project / "issues" / "slots.md").write_text(SLOT_ISSUE, encoding="utf-8")
    result = cli("build", "slots")
    assert result.exit_code == 0, result.output
    built = (project / "build" / "slots" / "email.txt").read_text(encoding="utf-8")
    assert "Ours are written %%mailer:99%% and %%mailer:0%%, also" in built
    result = cli("send", "slots", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "recipients   2" in result.output


# -- 2. a non-ASCII SMTP password ----------------------------------------------------------

PASSWORD = "pässwörd"


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_non_ascii_password_logs_in(
    cli: Run, smtp_server_factory: Callable[..., SMTPServer], mechanism: str
) -> None:
    server = smtp_server_factory(auth=("news", PASSWORD), auth_mechanisms=(mechanism,))
    env = {"MAILER_SMTP_USER": "news", "MAILER_SMTP_PASSWORD": PASSWORD}
    result = cli("send", "issue-2", "--yes", *FAST, server=server, env=env)
    assert result.exit_code == 0, result.output  # was: UnicodeEncodeError in smtplib's AUTH
    assert server.logins == 1
    assert sorted(server.by_recipient()) == READERS


def test_non_ascii_password_refused_is_exit_77(
    cli: Run, smtp_server_factory: Callable[..., SMTPServer]
) -> None:
    server = smtp_server_factory(auth=("news", "другой"))
    env = {"MAILER_SMTP_USER": "news", "MAILER_SMTP_PASSWORD": PASSWORD}
    result = cli("send", "issue-2", "--yes", *FAST, server=server, env=env)
    assert result.exit_code == 77, result.output
    assert error_line(result) == (
        f"Error: 127.0.0.1:{server.port} refused the login for 'news':"
        " 535 5.7.8 Authentication credentials invalid"
    )
    assert server.received == []


# -- 3. a .env that is not UTF-8 -----------------------------------------------------------

COMMANDS = [
    ["config"],
    ["send", "--dry-run"],
    ["send", "issue-2", "--yes"],
    ["build", "issue-2"],
    ["status", "issue-2"],
    ["subscribers", "check"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_dotenv_not_utf8_is_one_line_exit_2(cli: Run, project: Path, args: list[str]) -> None:
    (project / ".env").write_bytes(b"MAILER_FROM=Caf\xe9 <news@example.org>\n")
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        f"Error: {project}/.env: not UTF-8 text (an undecodable byte at offset 15)"
    )
    assert result.output.splitlines()[-1] == "  hint: save .env as UTF-8"


# -- 4. nan and inf are no numbers ---------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAILER_SMTP_TIMEOUT", "nan"),
        ("MAILER_SMTP_TIMEOUT", "inf"),
        ("MAILER_PAUSE", "inf"),
        ("MAILER_PAUSE", "NaN"),
        ("MAILER_RETRY_DELAY", "nan"),
        ("MAILER_RETRY_DELAY", "-inf"),
        ("MAILER_RETRY_DELAY", "Infinity"),
    ],
)
@pytest.mark.parametrize("args", [["config"], ["send", "issue-2", "--dry-run"]], ids=" ".join)
def test_nan_and_inf_are_refused(cli: Run, variable: str, value: str, args: list[str]) -> None:
    result = cli(*args, env={variable: value})
    assert result.exit_code == 2, result.output
    setting = variable.removeprefix("MAILER_").lower()
    what = BOUNDS[setting].describe()
    assert error_line(result) == (
        f"Error: setting {setting} (from environment) must be {what}, got {value!r}"
    )


def test_nan_as_a_flag_is_refused(cli: Run) -> None:
    result = cli("send", "issue-2", "--dry-run", "--pause", "nan")
    assert result.exit_code == 2, result.output
    assert (
        error_line(result) == "Error: --pause must be a number of seconds from 0 to 3600, got 'nan'"
    )


# -- 5. an empty subscriber file -----------------------------------------------------------


@pytest.mark.parametrize(
    "content", [b"", b"\n\n", b"\xef\xbb\xbf"], ids=["0 bytes", "blank", "BOM"]
)
@pytest.mark.parametrize(
    "args",
    [["send", "issue-2", "--yes"], ["send", "issue-2", "--dry-run"], ["subscribers", "check"]],
    ids=" ".join,
)
def test_empty_subscriber_file_is_exit_65(
    cli: Run, project: Path, smtp_server: SMTPServer, content: bytes, args: list[str]
) -> None:
    (project / "subscribers.csv").write_bytes(content)
    result = cli(*args, *FAST if "--yes" in args else [], server=smtp_server)
    assert result.exit_code == 65, result.output  # was: "sent 0", exit 0
    assert error_line(result) == (
        f"Error: {project}/subscribers.csv: no 'email' column: the file is empty"
    )
    assert smtp_server.connections == 0


def test_header_only_subscriber_file_is_an_empty_list(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    (project / "subscribers.csv").write_text("email,name\n", encoding="utf-8")
    result = cli("subscribers", "check")
    assert result.exit_code == 0, result.output
    assert result.output == f"{project}/subscribers.csv: 0 subscribers, 0 invalid, 0 skipped\n"
    result = cli("send", "issue-2", "--yes", *FAST, server=smtp_server)
    assert result.exit_code == 0, result.output
    assert "issue-2: sent 0, deferred 0, failed 0" in result.stdout
    assert smtp_server.connections == 0  # nobody to mail: no connection at all


# -- 6. `subscribers check` says how many rows it did not print ----------------------------


def test_subscribers_check_counts_the_rows_it_does_not_print(cli: Run, project: Path) -> None:
    rows = ["email,name,status"]
    rows += [f"bad{i},Bad {i}," for i in range(1205)]  # past the 1,000 problems kept, too
    rows += [f"gone{i}@example.com,Gone,unsubscribed" for i in range(60)]
    rows += ["ok@example.com,OK,"]
    (project / "subscribers.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = cli("subscribers", "check")
    assert result.exit_code == 65, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{project}/subscribers.csv: 1 subscribers, 1205 invalid, 60 skipped"
    assert sum(": skipped: " in line for line in lines) == 50
    assert sum(": invalid: " in line for line in lines) == 200
    assert "  …and 10 more skipped rows" in lines
    assert lines[-1] == "  …and 1005 more invalid rows"


def test_subscribers_check_says_nothing_more_when_all_are_printed(cli: Run, project: Path) -> None:
    rows = ["email"] + [f"bad{i}" for i in range(200)]
    (project / "subscribers.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = cli("subscribers", "check")
    assert result.exit_code == 65
    assert "more" not in result.output


# -- 7. `mailer status` of an issue that does not exist ------------------------------------


def test_status_of_no_such_issue_before_any_send(cli: Run) -> None:
    result = cli("status", "nope")
    assert result.exit_code == 65, result.output
    assert error_line(result) == "Error: no issue 'nope'"
    assert "  hint: issues in " in result.output


def test_status_of_no_such_issue_after_a_send(cli: Run, smtp_server: SMTPServer) -> None:
    assert cli("send", "issue-2", "--yes", *FAST, server=smtp_server).exit_code == 0
    result = cli("status", "nope")
    assert result.exit_code == 65, result.output  # was: "pending 2" for an issue that is not
    assert error_line(result) == "Error: no issue 'nope'"
    assert "issue-2" in result.output  # the hint lists the issues there are


# -- 8. the send question: "n" and ctrl-C / end of input -----------------------------------


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """CliRunner's stdin claims to be a terminal (stdout and stderr stay what they are)."""
    wrapper = click.testing._NamedTextIOWrapper  # the class of CliRunner's streams
    monkeypatch.setattr(wrapper, "isatty", lambda self: self.name == "<stdin>")


QUESTION = "Send 'issue-2' to up to 2 subscribers in subscribers.csv? [y/N]: "


@pytest.mark.usefixtures("terminal")
def test_no_at_the_question_is_not_sent_exit_0(cli: Run, smtp_server: SMTPServer) -> None:
    result = cli("send", "issue-2", *FAST, server=smtp_server, input="n\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(f"{QUESTION}n\nnot sent\n")  # CliRunner echoes the input
    assert smtp_server.connections == 0 and smtp_server.received == []


@pytest.mark.usefixtures("terminal")
def test_end_of_input_at_the_question_is_aborted_exit_130(
    cli: Run, smtp_server: SMTPServer
) -> None:
    result = cli("send", "issue-2", *FAST, server=smtp_server, input="")
    assert result.exit_code == 130, result.output  # was 1: "some recipients failed"
    assert result.stdout.endswith(f"{QUESTION}\n")
    assert result.stderr.splitlines()[-1] == "aborted: nothing was sent"
    assert "Aborted!" not in result.output
    assert smtp_server.connections == 0


@pytest.mark.usefixtures("terminal")
def test_yes_at_the_question_sends(cli: Run, smtp_server: SMTPServer) -> None:
    result = cli("send", "issue-2", *FAST, server=smtp_server, input="y\n")
    assert result.exit_code == 0, result.output
    assert sorted(smtp_server.by_recipient()) == READERS


# -- 9. a server that echoes the AUTH data -------------------------------------------------

WRONG = "wrong pässwörd"  # a space too: replies have their whitespace folded


def _forms(user: str, password: str) -> list[str]:
    """The password as a reply could show it: plain, and base64 as PLAIN and LOGIN send it."""
    data = password.encode()
    return [
        password,
        base64.b64encode(data).decode(),
        base64.b64encode(b"\0" + user.encode() + b"\0" + data).decode(),
    ]


@pytest.mark.parametrize(
    ("mechanism", "echoed"),
    [
        ("PLAIN", "PLAIN ******** (news:********)"),
        ("LOGIN", "LOGIN bmV3cw== ******** (news:********)"),  # bmV3cw== is "news"
    ],
)
def test_a_reply_echoing_the_password_is_masked(
    cli: Run, smtp_server_factory: Callable[..., SMTPServer], mechanism: str, echoed: str
) -> None:
    server = smtp_server_factory(
        auth=("news", "right"), echo_auth=True, auth_mechanisms=(mechanism,)
    )
    env = {"MAILER_SMTP_USER": "news", "MAILER_SMTP_PASSWORD": WRONG}
    result = cli("send", "issue-2", "--yes", *FAST, server=server, env=env)
    assert result.exit_code == 77, result.output
    assert error_line(result) == (
        f"Error: 127.0.0.1:{server.port} refused the login for 'news': 535 5.7.8 {echoed} rejected"
    )
    for form in _forms("news", WRONG):
        assert form not in result.output
    assert "pässwörd" not in result.output


def test_a_stored_reply_echoing_the_password_is_masked(
    cli: Run, project: Path, smtp_server_factory: Callable[..., SMTPServer]
) -> None:
    server = smtp_server_factory(auth=("news", PASSWORD))
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    server.rcpt_replies["zoe@example.com"] = f"550 5.7.1 not for {PASSWORD} ({encoded})"
    env = {"MAILER_SMTP_USER": "news", "MAILER_SMTP_PASSWORD": PASSWORD}
    result = cli("send", "issue-2", "--yes", *FAST, server=server, env=env)
    assert result.exit_code == 1, result.output
    assert "  zoe@example.com: 550 5.7.1 not for ******** (********)" in result.output
    failed = cli("status", "issue-2", "--failed", "--csv")
    assert failed.exit_code == 0, failed.output
    assert "550 5.7.1 not for ******** (********)" in failed.output
    for text in (result.output, failed.output):
        assert PASSWORD not in text and encoded not in text


# -- 10. a misspelt MAILER_* variable ------------------------------------------------------

HINT = "is not a setting (did you mean MAILER_SMTP_HOST?)"


@pytest.mark.parametrize("args", [["config"], ["send", "issue-2", "--dry-run"]], ids=" ".join)
def test_misspelt_variable_in_the_environment_warns(cli: Run, args: list[str]) -> None:
    result = cli(*args, env={"MAILER_SMTP_HSOT": "mail.example.org", "MAILER_NOW": ""})
    assert result.exit_code == 0, result.output
    assert f"warning: MAILER_SMTP_HSOT {HINT}" in result.stderr.splitlines()
    assert "MAILER_NOW" not in result.stderr
    assert result.stderr.count("is not a setting") == 1


def test_misspelt_variable_in_dotenv_warns_with_its_line(cli: Run, project: Path) -> None:
    (project / ".env").write_text(
        "MAILER_SECRET=s\nMAILER_SMTP_HSOT=mail.example.org\nMAILER_NOW=2026-01-01T00:00Z\n"
        "MAILER_ZZZZZZZZ=1\n",
        encoding="utf-8",
    )
    result = cli("config")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"warning: {project}/.env:2: MAILER_SMTP_HSOT {HINT}",
        f"warning: {project}/.env:4: MAILER_ZZZZZZZZ is not a setting",
    ]


def test_mailers_own_variables_do_not_warn(cli: Run) -> None:
    result = cli("config", env={"MAILER_NOW": "2026-01-01T00:00:00+00:00"})
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_unknown_toml_key_names_the_closest(cli: Run, project: Path) -> None:
    with (project / "mailer.toml").open("a", encoding="utf-8") as toml:
        toml.write('smtp_hots = "mail.example.org"\n')
    result = cli("config")
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        f"Error: {project}/mailer.toml: unknown setting 'smtp_hots' (did you mean 'smtp_host'?)"
    )
