"""A real, scriptable SMTP server for the tests (aiosmtpd on 127.0.0.1, free port).

In-process use::

    with SMTPServer() as server:
        server.reject.add("nobody@example.com")
        ...  # send to ("127.0.0.1", server.port)
        assert server.by_recipient()["ann@example.com"] == 1

As a subprocess (for tests that need a server outside the pytest process)::

    python tests/smtp_server.py --port 0 --out DIR

prints ``READY <port>`` once listening, writes each message to DIR/<n>.eml and
appends one line per recipient to DIR/recipients.log, until SIGTERM (or SIGINT).
``--delay-250 SECONDS`` waits that long after end-of-data (the message is already written)
before answering 250, so a client has a message in flight for that long.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import email
import email.message
import email.policy
import itertools
import logging
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

HOST = "127.0.0.1"

# aiosmtpd 1.4 logs a deprecation warning about its own use of Session.login_data on every AUTH.
logging.getLogger("mail.log").addFilter(lambda r: "login_data is deprecated" not in r.getMessage())


@dataclass
class Received:
    """One accepted message: the envelope and the exact bytes of DATA (CRLF line ends)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: tuple
    session_id: int  # 1 for the first SMTP connection, 2 for the next, ...
    mail_options: list[str] = field(default_factory=list)  # MAIL FROM's: SIZE=, SMTPUTF8
    at: float = field(default_factory=time.time)  # arrival: time.time() at end-of-data

    def message(self) -> email.message.EmailMessage:
        """Parsed with policy.default. CRLF -> LF first: the parser keeps CRs in bodies."""
        data = self.data.replace(b"\r\n", b"\n")
        return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path
    ca: Path


_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
subjectAltName = DNS:localhost, IP:127.0.0.1
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""
_NEW_KEY = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout"


def make_tls_files(dirpath: Path) -> TLSFiles:
    """A throwaway CA and a server certificate for localhost and 127.0.0.1, via the openssl CLI."""
    d = Path(dirpath)
    files = TLSFiles(cert=d / "server.pem", key=d / "server.key", ca=d / "ca.pem")
    ca_key, csr, cnf = d / "ca.key", d / "server.csr", d / "openssl.cnf"
    cnf.write_text(_OPENSSL_CONFIG)
    _openssl(
        "req -x509 -subj /CN=mailer-test-CA -days 7 -extensions ca",
        _NEW_KEY,
        ca_key,
        "-out",
        files.ca,
        "-config",
        cnf,
    )
    _openssl("req -new -subj /CN=localhost", _NEW_KEY, files.key, "-out", csr, "-config", cnf)
    _openssl(
        "x509 -req -set_serial 1 -days 7 -extensions server -extfile",
        cnf,
        "-in",
        csr,
        "-CA",
        files.ca,
        "-CAkey",
        ca_key,
        "-out",
        files.cert,
    )
    return files


def _openssl(*args: str | Path) -> None:
    """Run openssl; str arguments are split on spaces, paths are passed whole."""
    argv = [part for a in args for part in (a.split() if isinstance(a, str) else [str(a)])]
    subprocess.run(["openssl", *argv], check=True, capture_output=True)


class _SMTP(SMTP):
    """aiosmtpd's protocol (one per TCP connection), numbered so messages know their session."""

    def __init__(self, handler: SMTPServer, session_id: int, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self.session_id = session_id

    async def _handle_client(self) -> None:
        greeting = self.event_handler.greeting
        if greeting is None or not self.session_id:  # session 0: Controller.start()'s probe
            await super()._handle_client()
            return
        await self.push(greeting)  # instead of 220; the connection ends with it
        self.transport.close()


class _Controller(Controller):
    def __init__(self, server: SMTPServer, **kwargs) -> None:
        super().__init__(server, hostname=HOST, port=server.port, **kwargs)
        self._ids = itertools.count()  # 0: the probe connection Controller.start() makes

    def factory(self) -> _SMTP:
        session_id = next(self._ids)
        if session_id:
            self.handler.connections += 1
        return _SMTP(self.handler, session_id, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # aiosmtpd 1.4 probes (host, port) after binding, so with port 0 it would
        # connect to port 0: read the port actually bound first.
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SMTPServer:
    """aiosmtpd Controller on 127.0.0.1 with a scriptable handler.

    Scripting, safe to change while running (match is case-insensitive):
      defer       RCPT -> 451 4.7.1, always
      defer_once  RCPT -> 451 4.7.1 once; the address is then removed from the set
      reject      RCPT -> 550 5.1.1
      drop_after  once this many messages were accepted in total, the next DATA is read
                  but neither recorded nor answered: the connection is closed (once;
                  setting drop_after again re-arms it)
      rcpt_replies    {address: reply}: RCPT -> that reply, always ("452 4.2.2 Mailbox
                      full"); a reply starting with 421 also closes the connection after it
      mail_reply      MAIL FROM -> this reply for everyone (e.g. "530 5.7.0 ..."); None: 250
      drop_after_250  DATA for these addresses is recorded and answered 250, then the
                      server closes the connection (every time)
      hang_data       DATA for these addresses is recorded, then never answered: the server
                      waits until the client gives up and hangs up (every time)
      hang_all        the same for every message
      refuse_keep_data  RCPT -> 550 5.1.1, yet DATA is then answered 354 (a server RFC 2920
                        3.1 warns of); what follows is kept in `data_after_refusal`, not received
      delay_250       seconds to wait after end-of-data (the message already recorded)
                      before answering 250; a hang-up meanwhile leaves it recorded
      greeting        the server's first reply instead of 220 ("421 4.3.2 Try later"), after
                      which it hangs up (a fresh connection counts, nothing else happens)
      ehlo_reply      EHLO and HELO -> this reply; a reply starting with 421 also closes the
                      connection after it
    Each Received carries its arrival time (``at``); ``arrivals(address)`` lists them.
    With ``auth``, MAIL before a successful AUTH gets 530.
    """

    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        tls: TLSFiles | None = None,
        require_starttls: bool = False,
        implicit_tls: bool = False,
        echo_auth: bool = False,
        auth_mechanisms: tuple[str, ...] | None = None,
        pipelining: bool = False,
    ) -> None:
        if (require_starttls or implicit_tls) and tls is None:
            raise ValueError("require_starttls and implicit_tls need tls=TLSFiles")
        self.host = HOST
        self.port = 0
        self.auth = auth
        self.tls = tls
        self.require_starttls = require_starttls
        self.implicit_tls = implicit_tls
        # echo_auth: a refused AUTH is answered with a 535 that repeats the client's AUTH data
        # (base64 as sent, and decoded), as some servers do. auth_mechanisms: offer only these.
        self.echo_auth = echo_auth
        self.auth_mechanisms = auth_mechanisms
        # pipelining: EHLO offers PIPELINING (aiosmtpd reads pipelined commands either way).
        # What a client did is counted: `grouped`, MAILs whose RCPT had already arrived;
        # `overlapped`, end-of-data with the next command already waiting (RFC 2920 3.1).
        self.pipelining = pipelining
        self.mails = 0
        self.grouped = 0
        self.overlapped = 0
        self.received: list[Received] = []
        self.defer: set[str] = set()
        self.defer_once: set[str] = set()
        self.reject: set[str] = set()
        self.drop_after = None
        self.rcpt_replies: dict[str, str] = {}
        self.mail_reply: str | None = None
        self.drop_after_250: set[str] = set()
        self.hang_data: set[str] = set()
        self.hang_all = False
        self.refuse_keep_data: set[str] = set()
        self.data_after_refusal: list[bytes] = []
        self.delay_250 = 0.0
        self.greeting: str | None = None
        self.ehlo_reply: str | None = None
        self.connections = 0
        self.logins = 0
        self._lock = threading.Lock()
        self._controller: _Controller | None = None

    @property
    def drop_after(self) -> int | None:
        return self._drop_after

    @drop_after.setter
    def drop_after(self, value: int | None) -> None:
        self._drop_after = value
        self._drop_armed = value is not None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Listen on 127.0.0.1; a free port the first time, the same port on a restart."""
        kwargs: dict = {
            "server_hostname": "localhost",  # else aiosmtpd calls socket.getfqdn() per session
            "auth_require_tls": False,  # True would refuse AUTH on plain and implicit TLS
            "authenticator": self._authenticate,
            **self._auth_options(),
        }
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.tls.cert, self.tls.key)
            if self.implicit_tls:
                kwargs["ssl_context"] = context
            else:
                kwargs.update(tls_context=context, require_starttls=self.require_starttls)
        self._controller = _Controller(self, **kwargs)
        self._controller.start()
        self.port = self._controller.port

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SMTPServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def by_recipient(self) -> collections.Counter[str]:
        """Copies received per recipient address (lower-cased)."""
        with self._lock:
            return collections.Counter(r.lower() for m in self.received for r in m.rcpt_tos)

    def arrivals(self, address: str) -> list[float]:
        """When each copy for this address arrived (time.time() at end-of-data)."""
        with self._lock:
            return [
                m.at for m in self.received if any(r.lower() == address.lower() for r in m.rcpt_tos)
            ]

    def record(self, message: Received) -> None:
        with self._lock:
            self.received.append(message)

    # -- aiosmtpd hooks (run in the server's thread) --------------------------------------

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and self.auth == (
            auth_data.login.decode(),
            auth_data.password.decode(),
        )
        if ok:
            with self._lock:
                self.logins += 1
        # handled=False makes aiosmtpd reply 535; the default (True) sends no reply at all.
        if not ok and self.echo_auth and isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False, message=_echo(mechanism, auth_data))
        return AuthResult(success=ok, handled=False)

    def _auth_options(self) -> dict:
        if self.auth_mechanisms is None:
            return {}
        offered = {m.upper() for m in self.auth_mechanisms}
        return {"auth_exclude_mechanism": [m for m in ("LOGIN", "PLAIN") if m not in offered]}

    async def handle_EHLO(self, server, session, envelope, hostname, responses) -> list[str]:
        if self.ehlo_reply is not None:
            return [self._scripted_greeting(server)]
        session.host_name = hostname  # the 5-argument hook must do what aiosmtpd's EHLO does
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_HELO(self, server, session, envelope, hostname) -> str:
        if self.ehlo_reply is not None:
            return self._scripted_greeting(server)
        session.host_name = hostname  # what aiosmtpd's HELO does without a hook
        return f"250 {server.hostname}"

    def _scripted_greeting(self, server: _SMTP) -> str:
        """ehlo_reply, closing the connection after it when it is a 421."""
        reply = self.ehlo_reply or ""
        if reply.startswith("421"):
            # aiosmtpd writes the reply as soon as we return; the close runs after it.
            server.loop.call_soon(server.transport.close)
        return reply

    async def handle_MAIL(self, server, session, envelope, address, mail_options) -> str:
        with self._lock:
            self.mails += 1
            self.grouped += _waiting(server)
        if self.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        with self._lock:
            if _take(self.defer_once, address) or _find(self.defer, address):
                return "451 4.7.1 Try again later"
            if _find(self.reject, address):
                return "550 5.1.1 No such user"
            if _find(self.refuse_keep_data, address):
                envelope.rcpt_tos.append(address)  # so that DATA gets its 354
                envelope.refused_but_kept = True
                return "550 5.1.1 No such user"
            scripted = _find(set(self.rcpt_replies), address)
            reply = self.rcpt_replies.get(scripted) if scripted is not None else None
        if reply is not None:
            if reply.startswith("421"):
                # aiosmtpd writes the reply as soon as we return; the close runs after it.
                server.loop.call_soon(server.transport.close)
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: _SMTP, session, envelope) -> str:
        if _waiting(server):
            with self._lock:
                self.overlapped += 1
        with self._lock:
            drop = self._drop_armed and len(self.received) >= self._drop_after
            if drop:
                self._drop_armed = False
            if getattr(envelope, "refused_but_kept", False):
                self.data_after_refusal.append(envelope.original_content)
                return "250 OK"
        if drop:
            server.transport.close()
            await server.loop.create_future()  # never answer; connection_lost cancels us
        self.record(
            Received(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                data=envelope.original_content,
                peer=session.peer,
                session_id=server.session_id,
                mail_options=list(envelope.mail_options),
            )
        )
        rcpts = envelope.rcpt_tos
        with self._lock:
            hang = self.hang_all or any(_find(self.hang_data, r) for r in rcpts)
            hang_up = any(_find(self.drop_after_250, r) for r in rcpts)
            delay = self.delay_250
        if hang:
            await server.loop.create_future()  # never answer; connection_lost cancels us
        if delay:
            await asyncio.sleep(delay)  # a hang-up meanwhile cancels us: recorded, unanswered
        if hang_up:
            server.loop.call_soon(server.transport.close)  # after the 250 below is written
        return "250 OK"


def _echo(mechanism: str, data: LoginPassword) -> str:
    """A 535 that gives the AUTH data back: what the client sent in base64, then decoded."""
    if mechanism == "PLAIN":
        sent = base64.b64encode(b"\0" + data.login + b"\0" + data.password).decode()
    else:
        sent = f"{base64.b64encode(data.login).decode()} {base64.b64encode(data.password).decode()}"
    decoded = f"{data.login.decode('utf-8', 'replace')}:{data.password.decode('utf-8', 'replace')}"
    return f"535 5.7.8 {mechanism} {sent} ({decoded}) rejected"


def _waiting(server: SMTP) -> bool:
    """Has the client already sent more than the command being answered?"""
    return bool(server._reader._buffer)


def _find(addresses: set[str], address: str) -> str | None:
    return next((a for a in set(addresses) if a.lower() == address.lower()), None)


def _take(addresses: set[str], address: str) -> bool:
    found = _find(addresses, address)
    if found is not None:
        addresses.discard(found)
    return found is not None


class _FileSMTPServer(SMTPServer):
    """Subprocess mode: also write DIR/<n>.eml and DIR/recipients.log."""

    def __init__(self, out: Path, delay_250: float = 0.0, pipelining: bool = False) -> None:
        super().__init__(pipelining=pipelining)
        self.out = out
        self.delay_250 = delay_250

    def record(self, message: Received) -> None:
        with self._lock:
            self.received.append(message)
            n = len(self.received)
            tmp = self.out / f"{n}.eml.tmp"
            tmp.write_bytes(message.data)
            tmp.rename(self.out / f"{n}.eml")
            with open(self.out / "recipients.log", "a") as log:
                log.writelines(f"{r}\n" for r in message.rcpt_tos)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--delay-250",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long after end-of-data (message already written) before the 250",
    )
    parser.add_argument("--pipelining", action="store_true", help="offer PIPELINING in EHLO")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = _FileSMTPServer(args.out, delay_250=args.delay_250, pipelining=args.pipelining)
    server.port = args.port
    with server:
        print(f"READY {server.port}", flush=True)
        stop.wait()


if __name__ == "__main__":
    sys.exit(main())
