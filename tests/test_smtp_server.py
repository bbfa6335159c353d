"""The test SMTP server itself, driven by plain smtplib."""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest
from smtp_server import SMTPServer

SENDER = "news@example.com"


def make_message(subject: str = "Hello") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = "ann@example.com"
    msg["Subject"] = subject
    msg.set_content("Line one.\n.leading dot\n")
    return msg


def connect(server: SMTPServer) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, timeout=5)


def test_accepts_and_parses_a_message(smtp_server: SMTPServer) -> None:
    with connect(smtp_server) as client:
        client.send_message(make_message(), to_addrs=["ann@example.com", "Bob@Example.com"])

    [got] = smtp_server.received
    assert got.mail_from == SENDER
    assert got.rcpt_tos == ["ann@example.com", "Bob@Example.com"]
    assert got.data.endswith(b"\r\n") and b"\r\n.leading dot\r\n" in got.data  # dot unstuffed
    assert got.message()["Subject"] == "Hello"
    assert got.message().get_content() == "Line one.\n.leading dot\n"
    assert got.peer[0] == "127.0.0.1" and got.session_id == 1
    assert smtp_server.by_recipient() == {"ann@example.com": 1, "bob@example.com": 1}
    assert smtp_server.connections == 1


def test_rcpt_replies_451_and_550(smtp_server: SMTPServer) -> None:
    smtp_server.defer.add("later@example.com")
    smtp_server.reject.add("Gone@example.com")
    with connect(smtp_server) as client:
        refused = client.sendmail(
            SENDER, ["later@example.com", "gone@example.com", "ok@example.com"], b"x\r\n"
        )
        assert refused == {
            "later@example.com": (451, b"4.7.1 Try again later"),
            "gone@example.com": (550, b"5.1.1 No such user"),
        }
        with pytest.raises(smtplib.SMTPRecipientsRefused):  # "always" means always
            client.sendmail(SENDER, ["later@example.com"], b"x\r\n")
    assert [m.rcpt_tos for m in smtp_server.received] == [["ok@example.com"]]


def test_defer_once(smtp_server: SMTPServer) -> None:
    smtp_server.defer_once.add("ann@example.com")
    with connect(smtp_server) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail(SENDER, ["ann@example.com"], b"x\r\n")
        assert refused.value.recipients["ann@example.com"][0] == 451
        client.sendmail(SENDER, ["ann@example.com"], b"x\r\n")
    assert smtp_server.by_recipient() == {"ann@example.com": 1}
    assert smtp_server.defer_once == set()


def test_drop_mid_session(smtp_server: SMTPServer) -> None:
    smtp_server.drop_after = 1
    client = connect(smtp_server)
    client.sendmail(SENDER, ["a@example.com"], b"one\r\n")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail(SENDER, ["b@example.com"], b"two\r\n")
    with connect(smtp_server) as client:  # dropped once only
        client.sendmail(SENDER, ["b@example.com"], b"two\r\n")
    assert [m.rcpt_tos for m in smtp_server.received] == [["a@example.com"], ["b@example.com"]]
    assert [m.session_id for m in smtp_server.received] == [1, 2]
    assert smtp_server.connections == 2


def test_auth(smtp_server_factory) -> None:
    server = smtp_server_factory(auth=("user", "s3cret"))
    with connect(server) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail(SENDER, ["ann@example.com"], b"x\r\n")
        assert refused.value.smtp_code == 530
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            client.login("user", "wrong")
        assert failed.value.smtp_code == 535
        client.login("user", "s3cret")
        client.sendmail(SENDER, ["ann@example.com"], b"x\r\n")
    assert server.logins == 1
    assert len(server.received) == 1


def test_starttls(smtp_server_factory, smtp_tls_files) -> None:
    server = smtp_server_factory(tls=smtp_tls_files, require_starttls=True)
    with connect(server) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail(SENDER, ["ann@example.com"], b"x\r\n")
        assert refused.value.smtp_code == 530
        client.starttls(context=ssl.create_default_context(cafile=smtp_tls_files.ca))
        client.sendmail(SENDER, ["ann@example.com"], b"x\r\n")
    assert len(server.received) == 1

    with connect(server) as client, pytest.raises(ssl.SSLCertVerificationError):
        client.starttls(context=ssl.create_default_context())  # system CAs only


def test_implicit_tls(smtp_server_factory, smtp_tls_files) -> None:
    server = smtp_server_factory(tls=smtp_tls_files, implicit_tls=True, auth=("u", "p"))
    context = ssl.create_default_context(cafile=smtp_tls_files.ca)
    with smtplib.SMTP_SSL(server.host, server.port, context=context, timeout=5) as client:
        client.login("u", "p")
        client.sendmail(SENDER, ["ann@example.com"], b"x\r\n")
    assert len(server.received) == 1 and server.logins == 1

    # The certificate also names localhost.
    sock = socket.create_connection((server.host, server.port), timeout=5)
    with context.wrap_socket(sock, server_hostname="localhost") as tls:
        assert tls.recv(1024).startswith(b"220 ")


def test_subprocess_mode(tmp_path: Path) -> None:
    script = Path(__file__).with_name("smtp_server.py")
    argv = [sys.executable, str(script), "--port", "0", "--out", str(tmp_path)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        try:
            word, port = proc.stdout.readline().split()
            assert word == "READY"
            with smtplib.SMTP("127.0.0.1", int(port), timeout=5) as client:
                to = ["ann@example.com", "bob@example.com"]
                client.send_message(make_message(), to_addrs=to)
            # Files are written before the server answers DATA, so no waiting here.
            assert (tmp_path / "recipients.log").read_text() == "ann@example.com\nbob@example.com\n"
            assert b"Subject: Hello" in (tmp_path / "1.eml").read_bytes()
        finally:
            proc.terminate()
        assert proc.wait(timeout=5) == 0
