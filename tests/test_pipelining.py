"""RFC 2920 pipelining against a real aiosmtpd server that offers it (or not).

The fault matrix (test_faults.py) runs every fault with and without PIPELINING at depth 1
and 2; test_pipelining_postfix.py does the same against Postfix. Here: the session features
(STARTTLS, implicit TLS, AUTH, SMTPUTF8, SIZE) on the pipelined path, the escape hatch
`smtp_pipelining = off`, the settings' checks, and the refusals only a pipelining client
meets (a refused RCPT whose DATA is still answered 354).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from conftest import FAILED, SENT, MailerCli, smtp_env
from smtp_server import SMTPServer, TLSFiles

from mailer.state.ledger import Ledger

pytestmark = pytest.mark.slow  # a whole send over TLS, AUTH or pipelining in each test

READERS = [f"p{i:02d}@example.com" for i in range(12)]
UTF8_READER = "josé@example.com"
DEPTHS = [1, 2]


@pytest.fixture
def project(new_project: Callable[[str], Path]) -> Path:
    rows = "".join(f"{a},Reader {i}\n" for i, a in enumerate(READERS))
    return new_project("email,name\n" + rows)


Send = Callable[..., Result]


@pytest.fixture
def send(mailer_cli: MailerCli) -> Send:
    """send(project, server, depth=2, **env): `mailer send issue-2 --yes` to that server."""

    def run(project: Path, server: SMTPServer, depth: int = 2, **env: str) -> Result:
        settings = {
            **smtp_env(server),
            "MAILER_RATE": "off",
            "MAILER_PIPELINE_DEPTH": str(depth),
            "MAILER_BATCH_SIZE": "5",  # a fresh connection every 5 messages: flush, QUIT, reopen
            **env,
        }
        return mailer_cli(project, "send", "issue-2", "--yes", env=settings)

    return run


def states(project: Path) -> dict[str, str]:
    with Ledger(project / ".mailer") as ledger:
        return {d.email: d.state for d in ledger.deliveries("issue-2")}


def pipelined(server: SMTPServer, depth: int) -> None:
    """Every MAIL came with its RCPT; transactions overlapped exactly at depth 2."""
    assert server.mails == len(server.received) and server.mails > 0
    assert server.grouped == server.mails
    # Batches of 5 on one connection: 4 of each 5 ends-of-data had the next MAIL behind them.
    expected = len(server.received) - server.connections if depth == 2 else 0
    assert server.overlapped == expected, (server.overlapped, server.connections)


@pytest.fixture
def tls_server(
    smtp_server_factory: Callable[..., SMTPServer], smtp_tls_files: TLSFiles
) -> Iterator[Callable[[str], SMTPServer]]:
    def start(mode: str) -> SMTPServer:
        tls = {"implicit_tls": True} if mode == "ssl" else {"require_starttls": True}
        return smtp_server_factory(
            tls=smtp_tls_files, auth=("news", "s3cret"), pipelining=True, **tls
        )

    yield start


@pytest.mark.parametrize("depth", DEPTHS)
def test_every_reader_once_and_the_same_bytes_as_without(
    project: Path, smtp_server_factory: Callable[..., SMTPServer], depth: int, send: Send
) -> None:
    plain = smtp_server_factory()
    assert send(project, plain).exit_code == 0
    # A fresh start: the ledger and what the first run left outside it (state/continuity.py).
    shutil.rmtree(project / ".mailer")
    server = smtp_server_factory(pipelining=True)
    result = send(project, server, depth)
    assert result.exit_code == 0, result.output
    assert server.by_recipient() == dict.fromkeys(READERS, 1)
    assert states(project) == dict.fromkeys(READERS, SENT)
    pipelined(server, depth)
    assert server.connections == 3  # 12 readers in batches of 5

    def by_reader(s: SMTPServer) -> dict[str, tuple[str, bytes]]:
        # Date and Message-ID differ per run; every other byte must not.
        return {
            m.rcpt_tos[0]: (
                m.mail_from,
                b"\r\n".join(
                    line
                    for line in m.data.split(b"\r\n")
                    if not line.startswith((b"Date:", b"Message-ID:"))
                ),
            )
            for m in s.received
        }

    assert by_reader(server) == by_reader(plain)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_tls_and_auth_then_pipelining(
    project: Path,
    tls_server: Callable[[str], SMTPServer],
    smtp_tls_files: TLSFiles,
    mode: str,
    depth: int,
    send: Send,
) -> None:
    server = tls_server(mode)
    env = {
        "MAILER_SMTP_SECURITY": mode,
        "SSL_CERT_FILE": str(smtp_tls_files.ca),
        "MAILER_SMTP_USER": "news",
        "MAILER_SMTP_PASSWORD": "s3cret",
    }
    result = send(project, server, depth, **env)
    assert result.exit_code == 0, result.output
    assert server.by_recipient() == dict.fromkeys(READERS, 1)
    assert server.logins == server.connections == 3
    pipelined(server, depth)


@pytest.mark.parametrize("depth", DEPTHS)
def test_size_and_smtputf8_on_the_pipelined_envelope(
    new_project: Callable[[str], Path],
    smtp_server_factory: Callable[..., SMTPServer],
    depth: int,
    send: Send,
) -> None:
    project = new_project(f"email,name\nada@example.com,Ada\n{UTF8_READER},José\n")
    server = smtp_server_factory(pipelining=True)
    result = send(project, server, depth)
    assert result.exit_code == 0, result.output
    assert server.by_recipient() == {"ada@example.com": 1, UTF8_READER: 1}
    got = {m.rcpt_tos[0]: m for m in server.received}
    ada, jose = got["ada@example.com"], got[UTF8_READER]
    assert ada.mail_options == [f"SIZE={len(ada.data)}"]
    assert sorted(jose.mail_options) == [f"SIZE={len(jose.data)}", "SMTPUTF8"]
    assert server.grouped == 2


def test_off_never_pipelines_even_when_offered(
    project: Path, smtp_server_factory: Callable[..., SMTPServer], send: Send
) -> None:
    server = smtp_server_factory(pipelining=True)
    result = send(project, server, MAILER_SMTP_PIPELINING="off")
    assert result.exit_code == 0, result.output
    assert server.by_recipient() == dict.fromkeys(READERS, 1)
    assert (server.grouped, server.overlapped) == (0, 0)


def test_not_offered_is_never_pipelined(project: Path, smtp_server: SMTPServer, send: Send) -> None:
    result = send(project, smtp_server)  # auto, but aiosmtpd does not offer PIPELINING
    assert result.exit_code == 0, result.output
    assert smtp_server.by_recipient() == dict.fromkeys(READERS, 1)
    assert (smtp_server.grouped, smtp_server.overlapped) == (0, 0)


@pytest.mark.parametrize("depth", DEPTHS)
def test_a_refused_rcpt_whose_data_gets_354_ends_with_a_lone_dot(
    project: Path, smtp_server_factory: Callable[..., SMTPServer], depth: int, send: Send
) -> None:
    """RFC 2920 3.1: DATA accepted with no valid recipient: send a single dot, deliver
    nothing, and the reader is failed with the RCPT's reply; the others go on."""
    server = smtp_server_factory(pipelining=True)
    refused = READERS[3]
    server.refuse_keep_data.add(refused)
    result = send(project, server, depth)
    assert result.exit_code == 1, result.output  # one reader failed
    assert server.data_after_refusal == [b""]  # the lone dot: an empty message, once
    assert server.by_recipient() == dict.fromkeys(set(READERS) - {refused}, 1)
    got = states(project)
    assert got.pop(refused) == FAILED
    assert got == dict.fromkeys(set(READERS) - {refused}, SENT)
    with Ledger(project / ".mailer") as ledger:
        reply = {d.email: d.last_reply for d in ledger.deliveries("issue-2")}[refused]
    assert reply == "550 5.1.1 No such user"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MAILER_SMTP_PIPELINING", "sometimes", "smtp_pipelining must be one of auto, off"),
        (
            "MAILER_PIPELINE_DEPTH",
            "3",
            "pipeline_depth (from environment) must be a whole number from 1 to 2, got '3'",
        ),
        (
            "MAILER_PIPELINE_DEPTH",
            "0",
            "pipeline_depth (from environment) must be a whole number from 1 to 2, got '0'",
        ),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(
    project: Path, smtp_server: SMTPServer, name: str, value: str, message: str, send: Send
) -> None:
    result = send(project, smtp_server, **{name: value})
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert smtp_server.received == []
