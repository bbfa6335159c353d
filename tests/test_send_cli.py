"""`mailer send`, `mailer status` and `mailer subscribers check` end to end, against a real
SMTP server on 127.0.0.1; every received message is parsed with Python's email parser."""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner, Result
from conftest import (
    DEFERRED,
    FAILED,
    SECRET,
    SENT,
    MailerCli,
    delivery,
    one_line_error,
    smtp_env,
)
from smtp_server import SMTPServer, TLSFiles

import mailer.campaign
import mailer.compose.render
from mailer.cli import main
from mailer.compose.render import BUILTIN_TEMPLATES
from mailer.deliver.tokens import verify
from mailer.state.ledger import Ledger, lock

ROOT = Path(__file__).resolve().parent.parent
LIST_ID = "nlp-newsletter.example.org"
SUBJECT = (
    "NLP Newsletter #2 [EN]: Reformer, DeepMath, ELECTRA, TinyBERT for Search, VizSeq,"
    " Open-Sourcing ML,\u2026"
)
# Seven rows: five good, one bad address (line 7), one duplicate of line 2 (line 8).
# Mallory's quoted name holds a CRLF and a Bcc header; it spans lines 4-5.
SUBSCRIBERS = (
    "email,name,city\r\n"
    "ada@example.com,Ada Lovelace,London\r\n"
    "zoe@example.com,Zoë Martin,Lyon\r\n"
    'mallory@example.org,"Mallory\r\nBcc: evil@example.com",Nowhere\r\n'
    "html@example.net,<b>html</b>,Paris\r\n"
    "not-an-address,Bad Row,Nowhere\r\n"
    "ADA@example.com,Ada Again,London\r\n"
    "li@example.com,李雷,北京\r\n"
)
GOOD = [
    "ada@example.com",
    "zoe@example.com",
    "mallory@example.org",
    "html@example.net",
    "li@example.com",
]
NAMES = {
    "ada@example.com": "Ada Lovelace",
    "zoe@example.com": "Zoë Martin",
    "mallory@example.org": "Mallory Bcc: evil@example.com",
    "html@example.net": "<b>html</b>",
    "li@example.com": "李雷",
}
FAST = ["--rate", "off", "--retry-delay", "0.02"]


Run = Callable[..., Result]


# slow: a whole `mailer` command, issue rendered, in every test
pytestmark = [pytest.mark.usefixtures("render_memo"), pytest.mark.slow]


@pytest.fixture
def project(new_project: Callable[[str], Path]) -> Path:
    return new_project(SUBSCRIBERS)


@pytest.fixture
def cli(project: Path, mailer_cli: MailerCli) -> Run:
    def run(*args: str, server: SMTPServer | None = None, env: dict | None = None) -> Result:
        full_env = smtp_env(server) if server else smtp_env(port=1)
        full_env.update(env or {})
        return mailer_cli(project, *args, env=full_env)

    return run


def ledger_of(project: Path) -> Ledger:
    return Ledger(project / ".mailer")


def deliveries(project: Path) -> dict[str, tuple[str, int, str]]:
    if not (project / ".mailer" / "ledger.db").exists():
        return {}
    with ledger_of(project) as ledger:
        return {d.email: (d.state, d.attempts, d.last_reply) for d in ledger.deliveries("issue-2")}


def by_address(server: SMTPServer) -> dict[str, EmailMessage]:
    out = {}
    for received in server.received:
        [rcpt] = received.rcpt_tos
        assert rcpt not in out, f"two copies for {rcpt}"
        out[rcpt] = received.message()
    return out


# -- dry run -------------------------------------------------------------------------------


def test_dry_run_of_the_next_unsent_issue(cli: Run, project: Path, smtp_server: SMTPServer):
    result = cli("send", "--dry-run", server=smtp_server)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "issue-2" in out.splitlines()[0]  # it says which issue it picked
    assert "dry run of issue-2: nothing was sent" in out
    assert re.search(r"^  recipients\s+5$", out, re.M)
    assert re.search(r"^  rows read\s+7$", out, re.M)
    assert re.search(r"^  invalid\s+1$", out, re.M)
    assert re.search(r"^  skipped\s+1$", out, re.M)
    assert re.search(r"line 7: not-an-address: invalid address", out)
    assert re.search(r"line 8: ADA@example.com: duplicate of line 2", out)
    assert re.search(r"^  batches\s+1 of up to 100, 1 connection\(s\)$", out, re.M)
    assert re.search(r"^  duration\s+~\S+", out, re.M)
    # Nothing touched the network or the ledger.
    assert smtp_server.connections == 0 and smtp_server.received == []
    assert not (project / ".mailer" / "ledger.db").exists()


def test_dry_run_plan_batches_and_duration(cli: Run, smtp_server: SMTPServer) -> None:
    result = cli(
        "send", "issue-2", "--dry-run", "--rate", "1/s", "--batch-size", "2", server=smtp_server
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"^  batches\s+3 of up to 2, 1 connection\(s\)$", result.stdout, re.M)
    assert re.search(r"^  duration\s+~5s at 1/s$", result.stdout, re.M)
    assert smtp_server.connections == 0


def test_dry_run_writes_complete_sample_messages(cli: Run, project: Path) -> None:
    result = cli("send", "issue-2", "--dry-run")
    assert result.exit_code == 0, result.output
    out = project / "build" / "issue-2" / "dry-run"
    files = sorted(out.glob("*.eml"))
    assert [f.name for f in files] == [
        "01-ada@example.com.eml",
        "02-zoe@example.com.eml",
        "03-mallory@example.org.eml",
    ]
    for f, address in zip(files, GOOD, strict=False):
        assert f"sample       build/issue-2/dry-run/{f.name}" in result.stdout
        check_message(f.read_bytes(), address)


def test_dry_run_needs_no_secret_and_leaves_the_ledger_alone(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    with ledger_of(project) as ledger:
        ledger.record("issue-2", "ada@example.com", SENT, "250 ok")
        ledger.suppress("zoe@example.com", "unsubscribed", "web")
    before = deliveries(project)
    result = cli("send", "issue-2", "--dry-run", server=smtp_server, env={"MAILER_SECRET": ""})
    assert result.exit_code == 0, result.output
    assert re.search(r"^  already sent\s+1$", result.stdout, re.M)
    assert re.search(r"^  suppressed\s+1$", result.stdout, re.M)
    assert re.search(r"^  recipients\s+3$", result.stdout, re.M)
    assert deliveries(project) == before
    assert smtp_server.connections == 0


def test_dry_run_accounts_for_deferred_rows(cli: Run, project: Path) -> None:
    with ledger_of(project) as ledger:
        ledger.record("issue-2", "zoe@example.com", DEFERRED, "451 later")  # retry not due yet
    result = cli("send", "issue-2", "--dry-run")
    assert result.exit_code == 0, result.output  # a dry run defers nobody: 75 is for real sends
    plan = result.stdout.split("rows read", 1)[1].split("  batches", 1)[0]
    rows_read = int(plan.split()[0])
    counts = [int(m) for m in re.findall(r"(?m)^  [a-z][a-z ,()-]*?\s+(\d+)$", plan)]
    assert re.search(r"(?m)^  recipients\s+4$", plan)
    assert sum(counts) == rows_read == 7, plan


# -- a real send ---------------------------------------------------------------------------


def check_message(data: bytes, address: str) -> EmailMessage:
    """Everything one received message must be, for `address`."""
    import email
    import email.policy

    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) < 998
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    head, body = data.split(b"\r\n\r\n", 1)
    head.decode("ascii")
    assert max(len(line) for line in body.split(b"\r\n")) <= 76  # quoted-printable
    msg = email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert not msg.defects
    assert msg["From"] == "NLP Newsletter <newsletter@example.org>"
    [to] = msg["To"].addresses
    assert to.addr_spec == address
    assert to.display_name == NAMES[address]
    assert msg["Subject"] == SUBJECT
    assert parsedate_to_datetime(msg["Date"]).tzinfo is not None
    assert re.fullmatch(r"<issue-2\.[0-9a-f]{32}@example\.org>", msg["Message-ID"])
    assert msg["List-Id"] == f"NLP Newsletter <{LIST_ID}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Bcc"] is None and msg["Cc"] is None
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe"):
        assert len(msg.get_all(name)) == 1, name
    https, mailto = re.findall(r"<([^>]+)>", " ".join(msg["List-Unsubscribe"].split()))
    prefix, signed = mailto.split("%20")  # the subject carries the same signed token
    assert prefix == "mailto:unsubscribe@example.org?subject=unsubscribe"
    assert verify(SECRET, LIST_ID, signed) == address
    url = urlsplit(https)
    assert url.scheme == "https" and url.netloc == "newsletter.example.org"
    assert verify(SECRET, LIST_ID, parse_qs(url.query)["token"][0]) == address
    parts = list(msg.iter_parts())
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    text, html = parts[0].get_content(), parts[1].get_content()
    assert f"You receive this because {address} subscribed" in text
    assert f"Unsubscribe: {https}" in text
    assert f"You receive this because {address} subscribed" in html
    assert "{{" not in text and "%%mailer" not in text and "%%mailer" not in html
    return msg


def test_send_delivers_one_correct_message_to_each(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    result = cli("send", "issue-2", "--yes", *FAST, server=smtp_server)
    assert result.exit_code == 0, result.output
    assert "issue-2: sent 5, deferred 0, failed 0" in result.stdout
    assert "line 7: invalid address" in result.stderr
    got = by_address(smtp_server)
    assert sorted(got) == sorted(GOOD)
    assert "evil@example.com" not in smtp_server.by_recipient()
    for received in smtp_server.received:
        assert received.mail_from == "newsletter@example.org"
        msg = check_message(received.data, received.rcpt_tos[0])
        https = re.findall(r"<(https[^>]+)>", msg["List-Unsubscribe"])[0]
        token = parse_qs(urlsplit(https).query)["token"][0]
        assert verify(SECRET, LIST_ID, token) == received.rcpt_tos[0]
    assert len({m["Message-ID"] for m in got.values()}) == 5
    # The header injection attempt stayed a display name.
    mallory = got["mallory@example.org"]["To"].addresses[0]
    assert mallory.display_name == NAMES["mallory@example.org"]
    assert deliveries(project) == {a: (SENT, 1, "250 accepted") for a in GOOD}
    assert smtp_server.connections == 1


def test_send_with_rate_batches_and_connections(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    result = cli(
        "send",
        "issue-2",
        "--yes",
        "--rate",
        "20/s",
        "--batch-size",
        "200",
        "--connections",
        "2",
        server=smtp_server,
    )
    assert result.exit_code == 0, result.output
    assert "2 connection(s), rate 20/s" in result.stdout
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}
    assert 1 <= smtp_server.connections <= 2


def test_batch_size_reconnects_and_logs_in_once_per_connection(
    cli: Run, project: Path, smtp_server_factory: Callable[..., SMTPServer]
) -> None:
    server = smtp_server_factory(auth=("news", "s3cret"))
    env = {"MAILER_SMTP_USER": "news", "MAILER_SMTP_PASSWORD": "s3cret"}
    result = cli("send", "issue-2", "--yes", "--batch-size", "2", *FAST, server=server, env=env)
    assert result.exit_code == 0, result.output
    assert server.by_recipient() == {a: 1 for a in GOOD}
    assert server.connections == 3 and server.logins == 3


def test_personalisation_renders_once(
    cli: Run, project: Path, smtp_server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mailer.campaign, "render", mailer.compose.render.render)  # no memo here
    calls = {"compile_mjml": 0, "inline_css": 0}
    for name in calls:
        original = getattr(mailer.compose.render, name)

        def counted(*args: object, _name: str = name, _original=original) -> str:
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(mailer.compose.render, name, counted)
    result = cli("send", "issue-2", "--yes", *FAST, server=smtp_server)
    assert result.exit_code == 0, result.output
    assert len(smtp_server.received) == 5
    assert calls == {"compile_mjml": 1, "inline_css": 1}


def test_subscriber_data_is_html_escaped(cli: Run, project: Path, smtp_server: SMTPServer) -> None:
    (project / "templates").mkdir()
    source = (BUILTIN_TEMPLATES / "newsletter.mjml.j2").read_text(encoding="utf-8")
    marker = '<mj-body background-color="#f3f4f6" width="600px" css-class="page">'
    assert marker in source
    greeting = (
        "<mj-section><mj-column><mj-text>Hello {{ subscriber.name }} from {{ subscriber.city }}"
        "</mj-text></mj-column></mj-section>"
    )
    (project / "templates" / "newsletter.mjml.j2").write_text(
        source.replace(marker, marker + greeting, 1), encoding="utf-8"
    )
    result = cli("send", "issue-2", "--yes", *FAST, server=smtp_server)
    assert result.exit_code == 0, result.output
    got = by_address(smtp_server)
    html = got["html@example.net"].get_body(("html",)).get_content()
    assert "Hello &lt;b&gt;html&lt;/b&gt; from Paris" in html
    assert "<b>html</b>" not in html
    zoe = got["zoe@example.com"].get_body(("html",)).get_content()
    assert "Hello Zoë Martin from Lyon" in zoe
    li = got["li@example.com"].get_body(("html",)).get_content()
    assert "Hello 李雷 from 北京" in li
    mallory = got["mallory@example.org"].get_body(("html",)).get_content()
    assert "Hello Mallory Bcc: evil@example.com from Nowhere" in mallory


def test_rerun_sends_only_to_those_not_yet_sent(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    first = project / "first.csv"
    first.write_text(
        "email,name,city\nada@example.com,Ada,London\nzoe@example.com,Zoë,Lyon\n", encoding="utf-8"
    )
    result = cli("send", "issue-2", "--yes", "--subscribers", str(first), *FAST, server=smtp_server)
    assert result.exit_code == 0, result.output
    assert smtp_server.by_recipient() == {"ada@example.com": 1, "zoe@example.com": 1}
    result = cli("send", "issue-2", "--yes", *FAST, server=smtp_server)
    assert result.exit_code == 0, result.output
    assert "issue-2: sent 3, deferred 0, failed 0" in result.stdout
    assert "2 already sent earlier" in result.stdout
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}
    result = cli("send", "issue-2", "--yes", *FAST, server=smtp_server)
    assert result.exit_code == 0, result.output
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}


def test_next_unsent_issue_when_all_are_sent(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    assert cli("send", "issue-2", "--yes", *FAST, server=smtp_server).exit_code == 0
    result = cli("send", "--dry-run", server=smtp_server)
    assert result.exit_code == 65
    assert "every issue in issues/ has been sent to everyone on the list" in result.output


def test_next_unsent_issue_ignores_unsubscribed(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    assert cli("unsubscribe", "li@example.com", "--reason", "unsubscribed").exit_code == 0
    assert cli("send", "issue-2", "--yes", *FAST, server=smtp_server).exit_code == 0
    assert "li@example.com" not in smtp_server.by_recipient()
    result = cli("send", "--dry-run", server=smtp_server)
    assert result.exit_code == 65
    assert "has been sent to everyone" in result.output


# -- confirmation ------------------------------------------------------------------------


def test_real_send_without_terminal_needs_yes(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    result = cli("send", "issue-2", *FAST, server=smtp_server)
    assert result.exit_code == 2
    error = one_line_error(result)
    assert "refusing a real send without a terminal" in error
    assert "--yes" in result.output
    assert smtp_server.connections == 0
    assert deliveries(project) == {}


def _send_on_a_terminal(project: Path, server: SMTPServer, answer: bytes) -> tuple[int, str, str]:
    master, slave = os.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(smtp_env(server))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailer", "-C", str(project), "send", "issue-2", *FAST],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        os.close(slave)
        os.write(master, answer)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    return proc.returncode, out.decode(), err.decode()


def test_asks_on_a_terminal(project: Path, smtp_server: SMTPServer) -> None:
    code, out, err = _send_on_a_terminal(project, smtp_server, b"n\n")
    assert "Send 'issue-2' to up to 7 subscribers in subscribers.csv? [y/N]" in out
    assert code == 0 and "not sent" in out  # a "no" is an answer, not a failure
    assert smtp_server.connections == 0 and smtp_server.received == []
    code, out, err = _send_on_a_terminal(project, smtp_server, b"y\n")
    assert code == 0, out + err
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}


# -- test copy -----------------------------------------------------------------------------


def test_test_copy_to_one_address(cli: Run, project: Path, smtp_server: SMTPServer) -> None:
    result = cli("send", "issue-2", "--to", "me@example.org", server=smtp_server)
    assert result.exit_code == 0, result.output
    assert "test copy of issue-2 to me@example.org: 250" in result.stdout
    [received] = smtp_server.received
    assert received.rcpt_tos == ["me@example.org"]
    msg = received.message()
    assert msg["Subject"] == SUBJECT
    assert msg["To"].addresses[0].addr_spec == "me@example.org"
    assert deliveries(project) == {}
    assert cli("send", "issue-2", "--to", "me@example.org", server=smtp_server).exit_code == 0
    assert smtp_server.by_recipient() == {"me@example.org": 2}  # a test copy is not recorded


def test_test_copy_needs_a_valid_address(cli: Run, smtp_server: SMTPServer) -> None:
    result = cli("send", "issue-2", "--to", "not-an-address", server=smtp_server)
    assert result.exit_code == 2
    assert "--to" in result.output
    assert smtp_server.connections == 0


# -- failures, deferrals, exit codes, status -----------------------------------------------


def test_permanent_failure_keeps_the_reply_and_exits_1(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    smtp_server.reject.add("zoe@example.com")
    result = cli("send", "issue-2", "--yes", *FAST, server=smtp_server)
    assert result.exit_code == 1, result.output
    assert "issue-2: sent 4, deferred 0, failed 1" in result.stdout
    assert "zoe@example.com: 550 5.1.1 No such user" in result.stderr
    assert deliveries(project)["zoe@example.com"] == (FAILED, 1, "550 5.1.1 No such user")
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD if a != "zoe@example.com"}

    # Not retried unless asked.
    smtp_server.reject.clear()
    result = cli("send", "issue-2", "--yes", *FAST, server=smtp_server)
    assert result.exit_code == 0, result.output
    assert "zoe@example.com" not in smtp_server.by_recipient()
    result = cli("send", "issue-2", "--yes", "--retry-failed", *FAST, server=smtp_server)
    assert result.exit_code == 0, result.output
    assert "issue-2: sent 1, deferred 0, failed 0" in result.stdout
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}
    assert deliveries(project)["zoe@example.com"][0] == SENT


def test_still_deferred_exits_75(cli: Run, project: Path, smtp_server: SMTPServer) -> None:
    smtp_server.defer.add("li@example.com")
    result = cli("send", "issue-2", "--yes", "--max-attempts", "2", *FAST, server=smtp_server)
    assert result.exit_code == 75, result.output
    assert "issue-2: sent 4, deferred 1, failed 0" in result.stdout
    assert "1 deferred: a later `mailer send issue-2` retries them" in result.stdout
    state, attempts, reply = deliveries(project)["li@example.com"]
    assert (state, reply) == (DEFERRED, "451 4.7.1 Try again later")
    assert attempts >= 2


def test_status_and_failed_csv(cli: Run, project: Path, smtp_server: SMTPServer) -> None:
    smtp_server.reject.add("zoe@example.com")
    smtp_server.defer.add("li@example.com")
    result = cli("send", "issue-2", "--yes", "--max-attempts", "2", *FAST, server=smtp_server)
    assert result.exit_code == 1, result.output  # a permanent failure outranks a deferral

    status = cli("status", "issue-2")
    assert status.exit_code == 0, status.output
    out = status.stdout
    assert out.splitlines()[0] == "issue-2"
    assert re.search(r"^  sent\s+3$", out, re.M)
    assert re.search(r"^  deferred\s+1$", out, re.M)
    assert re.search(r"^  failed\s+1$", out, re.M)
    assert re.search(r"^  pending\s+0$", out, re.M)
    assert "zoe@example.com: 550 5.1.1 No such user" in out
    assert "li@example.com: 451 4.7.1 Try again later" in out

    listing = cli("status", "issue-2", "--failed", "--csv")
    assert listing.exit_code == 0, listing.output
    rows = list(csv.reader(io.StringIO(listing.stdout)))
    assert rows[0] == ["email", "state", "attempts", "reply", "updated_at", "next_try_at"]
    by_email = {r[0]: r for r in rows[1:]}
    assert by_email["zoe@example.com"][5] == ""  # failed: never tried again
    assert by_email["li@example.com"][5].endswith("+00:00")  # deferred: when it is due
    assert set(by_email) == {"zoe@example.com", "li@example.com"}
    assert by_email["zoe@example.com"][1:4] == ["failed", "1", "550 5.1.1 No such user"]
    assert by_email["li@example.com"][1] == "deferred"
    assert by_email["li@example.com"][3] == "451 4.7.1 Try again later"
    assert int(by_email["li@example.com"][2]) >= 2
    for r in rows[1:]:
        assert r[4].endswith("+00:00")


def test_status_before_any_send(cli: Run) -> None:
    result = cli("status", "issue-2")
    assert result.exit_code == 65
    assert "nothing has been sent yet" in one_line_error(result)


def test_status_counts_pending(cli: Run, project: Path, smtp_server: SMTPServer) -> None:
    with ledger_of(project) as ledger:
        ledger.record("issue-2", "ada@example.com", SENT, "250 ok")
    result = cli("status", "issue-2")
    assert re.search(r"^  sent\s+1$", result.stdout, re.M)
    assert re.search(r"^  pending\s+4$", result.stdout, re.M)


def test_subscribers_check(cli: Run, project: Path) -> None:
    result = cli("subscribers", "check", "subscribers.csv")
    assert result.exit_code == 65
    out = result.stdout
    assert "5 subscribers, 1 invalid, 1 skipped" in out
    assert re.search(r"line 7: invalid: not-an-address: ", out)
    assert re.search(r"line 8: skipped: ADA@example.com: duplicate of line 2", out)
    (project / "clean.csv").write_text("email,name\na@example.com,A\n", encoding="utf-8")
    result = cli("subscribers", "check", "clean.csv")
    assert result.exit_code == 0
    assert "1 subscribers, 0 invalid, 0 skipped" in result.stdout


# -- refusing to start ---------------------------------------------------------------------


def write_issue(project: Path, name: str, body: str, **front: str) -> None:
    meta = {"title": "A short issue", **front}
    lines = ["---", *(f"{k}: {v}" for k, v in meta.items()), "---", "", body, ""]
    (project / "issues" / f"{name}.md").write_text("\n".join(lines), encoding="utf-8")


def test_preflight_refuses_unfilled_template_syntax(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    # (A merge field the list lacks, {{ subscriber.nmae }}, is refused too: test_fields.py.)
    write_issue(project, "issue-3", "Hello {{ subscriber.name | upper }}, welcome.")
    for args in (["--yes"], ["--dry-run"]):
        result = cli("send", "issue-3", *args, *FAST, server=smtp_server)
        assert result.exit_code == 65, result.output
        assert "refusing to send:" in result.output
        assert "unfilled template syntax: {{ subscriber.name | upper }}" in result.output
    assert smtp_server.connections == 0
    assert deliveries(project) == {}


def test_preflight_refuses_a_template_without_unsubscribe_link(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    (project / "templates").mkdir()
    for name in ("newsletter.mjml.j2", "newsletter.txt.j2"):
        source = (BUILTIN_TEMPLATES / name).read_text(encoding="utf-8")
        source = source.replace("{{ unsubscribe_url }}", "https://example.org/")
        assert "unsubscribe_url" not in source.split("-#}", 1)[-1]
        (project / "templates" / name).write_text(source, encoding="utf-8")
    result = cli("send", "issue-2", "--yes", *FAST, server=smtp_server)
    assert result.exit_code == 65, result.output
    assert "the template has no {{ unsubscribe_url }} link" in result.output
    assert smtp_server.connections == 0 and deliveries(project) == {}


def test_real_send_needs_mailer_secret(cli: Run, project: Path, smtp_server: SMTPServer) -> None:
    result = cli("send", "issue-2", "--yes", *FAST, server=smtp_server, env={"MAILER_SECRET": ""})
    assert result.exit_code == 65, result.output
    assert "no MAILER_SECRET" in result.output
    assert smtp_server.connections == 0 and deliveries(project) == {}


def test_missing_from_refuses(cli: Run, project: Path, smtp_server: SMTPServer) -> None:
    toml = (project / "mailer.toml").read_text(encoding="utf-8")
    (project / "mailer.toml").write_text(re.sub(r"(?m)^from = .*$", "", toml), encoding="utf-8")
    result = cli("send", "issue-2", "--yes", *FAST, server=smtp_server)
    assert result.exit_code == 65, result.output  # preflight, before the From is ever parsed
    assert "no From address" in result.output
    assert "MAILER_FROM" in result.output
    assert "Traceback" not in result.output
    assert smtp_server.connections == 0 and deliveries(project) == {}


def test_preflight_lists_every_reason(cli: Run, project: Path, smtp_server: SMTPServer) -> None:
    toml = (project / "mailer.toml").read_text(encoding="utf-8")
    (project / "mailer.toml").write_text(re.sub(r"(?m)^from = .*$", "", toml), encoding="utf-8")
    write_issue(project, "issue-3", "Hello {{ subscriber.name | upper }}.")
    result = cli("send", "issue-3", "--yes", *FAST, server=smtp_server, env={"MAILER_SECRET": ""})
    assert result.exit_code == 65
    assert "no From address" in result.output
    assert "unfilled template syntax" in result.output
    assert "no MAILER_SECRET" in result.output


def test_wrong_password_stops_with_exit_77(
    cli: Run, project: Path, smtp_server_factory: Callable[..., SMTPServer]
) -> None:
    server = smtp_server_factory(auth=("news", "s3cret"))
    env = {"MAILER_SMTP_USER": "news", "MAILER_SMTP_PASSWORD": "wrong"}
    result = cli("send", "issue-2", "--yes", *FAST, server=server, env=env)
    assert result.exit_code == 77, result.output
    assert "refused the login for 'news'" in one_line_error(result)
    assert "wrong" not in result.output  # the password is never printed
    assert server.received == [] and deliveries(project) == {}


def test_server_requiring_auth_without_credentials_marks_nobody(
    cli: Run, project: Path, smtp_server_factory: Callable[..., SMTPServer]
) -> None:
    server = smtp_server_factory(auth=("news", "s3cret"))
    result = cli("send", "issue-2", "--yes", *FAST, server=server)
    assert result.exit_code == 77, result.output  # MAIL FROM got 530 5.7.0: relaying refused
    assert "refused to relay" in result.output
    assert server.received == [] and deliveries(project) == {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_exits_69(cli: Run, project: Path) -> None:
    port = free_port()
    result = CliRunner().invoke(
        main, ["-C", str(project), "send", "issue-2", "--yes", *FAST], env=smtp_env(port=port)
    )
    assert result.exit_code == 69, result.output
    assert f"cannot reach the SMTP server at 127.0.0.1:{port}" in one_line_error(result)
    assert deliveries(project) == {}


def test_second_send_while_one_runs_is_refused(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    with lock(project / ".mailer", "send-issue-2"):
        result = cli("send", "issue-2", "--yes", *FAST, server=smtp_server)
    assert result.exit_code == 75, result.output
    assert "another mailer run is sending issue-2" in one_line_error(result)
    assert smtp_server.connections == 0
    result = cli("send", "issue-2", "--yes", *FAST, server=smtp_server)
    assert result.exit_code == 0
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_non_ascii_address_is_sent_with_smtputf8(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    (project / "subscribers.csv").write_text(
        "email,name,city\nada@example.com,Ada,London\njosé@example.com,José,Sevilla\n"
        "bob@example.com,Bob,Paris\n",
        encoding="utf-8",
    )
    result = cli("send", "issue-2", "--yes", *FAST, server=smtp_server)
    assert smtp_server.by_recipient() == {
        "ada@example.com": 1,
        "josé@example.com": 1,
        "bob@example.com": 1,
    }
    assert result.exit_code == 0, result.output


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture
def tls_server(
    smtp_server_factory: Callable[..., SMTPServer], smtp_tls_files: TLSFiles
) -> Iterator[Callable[[str], SMTPServer]]:
    def start(mode: str) -> SMTPServer:
        if mode == "ssl":
            return smtp_server_factory(tls=smtp_tls_files, implicit_tls=True)
        return smtp_server_factory(tls=smtp_tls_files, require_starttls=True)

    yield start


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_untrusted_certificate_is_a_clean_error(
    cli: Run, project: Path, tls_server: Callable[[str], SMTPServer], mode: str
) -> None:
    server = tls_server(mode)
    result = cli(
        "send", "issue-2", "--yes", *FAST, server=server, env={"MAILER_SMTP_SECURITY": mode}
    )
    assert result.exit_code == 69, result.output
    assert "certificate is not trusted" in one_line_error(result)
    assert server.received == [] and deliveries(project) == {}


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_verify_false_accepts_a_self_signed_server(
    cli: Run, project: Path, tls_server: Callable[[str], SMTPServer], mode: str
) -> None:
    server = tls_server(mode)
    result = cli(
        "send",
        "issue-2",
        "--yes",
        *FAST,
        server=server,
        env={"MAILER_SMTP_SECURITY": mode, "MAILER_SMTP_VERIFY": "false"},
    )
    assert result.exit_code == 0, result.output
    assert server.by_recipient() == {a: 1 for a in GOOD}


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_trusted_ca_verifies(
    cli: Run,
    project: Path,
    tls_server: Callable[[str], SMTPServer],
    smtp_tls_files: TLSFiles,
    mode: str,
) -> None:
    server = tls_server(mode)
    env = {"MAILER_SMTP_SECURITY": mode, "SSL_CERT_FILE": str(smtp_tls_files.ca)}
    result = cli("send", "issue-2", "--yes", *FAST, server=server, env=env)
    assert result.exit_code == 0, result.output
    assert server.by_recipient() == {a: 1 for a in GOOD}


def test_plain_connection_to_a_starttls_only_server_marks_nobody(
    cli: Run, project: Path, tls_server: Callable[[str], SMTPServer]
) -> None:
    server = tls_server("starttls")
    result = cli("send", "issue-2", "--yes", *FAST, server=server)
    assert result.exit_code == 69, result.output  # MAIL FROM got 530 "STARTTLS first"
    assert "wants TLS first" in result.output
    assert server.received == []
    assert deliveries(project) == {}


# -- edge cases found in review ------------------------------------------------------------


def test_dry_run_sample_names_are_safe_for_any_address(cli: Run, project: Path) -> None:
    (project / "subscribers.csv").write_text("email,name\nx/y@example.org,X\n", encoding="utf-8")
    result = cli("send", "issue-2", "--dry-run")
    assert result.exit_code == 0, result.output
    samples = list((project / "build" / "issue-2" / "dry-run").glob("*.eml"))
    assert [p.name for p in samples] == ["01-x_y@example.org.eml"]


def test_issue_file_name_must_be_an_id(cli: Run, project: Path) -> None:
    (project / "issues" / "issue-2.md").rename(project / "issues" / "spring issue.md")
    result = cli("send", "spring issue", "--dry-run")
    assert result.exit_code == 65
    assert "file name may only use letters, digits" in result.output
    assert "spring-issue.md" in result.output


def test_test_copy_needs_the_secret(cli: Run, smtp_server: SMTPServer) -> None:
    result = cli(
        "send", "issue-2", "--to", "me@example.org", server=smtp_server, env={"MAILER_SECRET": ""}
    )
    assert result.exit_code == 65
    assert "no MAILER_SECRET" in result.output
    assert smtp_server.received == []


def test_a_filter_on_a_subscriber_field_is_refused(cli: Run, project: Path) -> None:
    templates = project / "templates"
    templates.mkdir()
    source = (BUILTIN_TEMPLATES / "newsletter.mjml.j2").read_text(encoding="utf-8")
    (templates / "newsletter.mjml.j2").write_text(
        source.replace("{{ content }}", "Hi {{ subscriber.name | upper }}! {{ content }}"),
        encoding="utf-8",
    )
    result = cli("send", "issue-2", "--dry-run")
    assert result.exit_code == 65
    assert "%%MAILER:" in result.output and "a filter changed a subscriber field" in result.output


def test_non_ascii_reply_to_is_encoded(cli: Run, project: Path) -> None:
    result = cli(
        "send",
        "issue-2",
        "--dry-run",
        env={"MAILER_REPLY_TO": "Redaktion Zürich <red@example.org>"},
    )
    assert result.exit_code == 0, result.output
    sample = sorted((project / "build" / "issue-2" / "dry-run").glob("*.eml"))[0].read_bytes()
    head = sample.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert b"Reply-To: =?utf-8?" in head and b"<red@example.org>" in head


def test_secrets_are_refused_in_mailer_toml(cli: Run, project: Path) -> None:
    with (project / "mailer.toml").open("a", encoding="utf-8") as fh:
        fh.write('secret = "committed-by-mistake"\n')
    result = cli("config")
    assert result.exit_code == 2
    assert "does not belong in a file that is committed" in result.output
    assert "committed-by-mistake" not in result.output


def test_rcpt_421_drops_the_connection_without_costing_the_next_reader(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    # A server that answers RCPT with 421 hangs up; the next reader needs a fresh connection.
    original = smtp_server.handle_RCPT
    said: list[str] = []

    async def once_421(server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        if address.lower() == "zoe@example.com" and not said:
            said.append(address)
            return "421 4.3.2 Service shutting down"
        return await original(server, session, envelope, address, rcpt_options)

    smtp_server.handle_RCPT = once_421  # type: ignore[method-assign]
    result = cli("send", "issue-2", "--yes", *FAST, server=smtp_server)
    assert result.exit_code == 0, result.output
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}
    with Ledger(project / ".mailer") as ledger:
        assert delivery(ledger, "issue-2", "zoe@example.com").attempts == 2  # type: ignore[union-attr]
        assert delivery(ledger, "issue-2", "html@example.net").attempts == 1  # type: ignore[union-attr]
