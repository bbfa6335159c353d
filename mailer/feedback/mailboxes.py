"""Where `mailer bounces` reads messages from, and where handled ones go: Maildir, mbox, IMAP."""

from __future__ import annotations

import contextlib
import errno
import imaplib
import os
import ssl
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mailer.config import Settings, env_name
from mailer.errors import EXIT_NOPERM, EXIT_UNAVAILABLE, ConfigError, InputError, MailerError

PROCESSED = "processed"  # the folder handled messages move to (Maildir: .processed)
IMAP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Item:
    """One message in a mailbox: its key there, how to name it to a user, its bytes."""

    key: str
    label: str
    data: bytes


class Mailbox(Protocol):
    name: str  # maildir, mbox, imap: recorded as the source

    def messages(self) -> Iterator[Item]: ...

    def done(self, item: Item) -> None:
        """Move a handled message out of the way (to the processed folder)."""

    def close(self) -> None: ...


def _regular_file(path: Path) -> bytes | None:
    """The bytes of a regular file; None for a symlink (never followed: a link to a file of
    the system's must not be read and reported), a FIFO, a device or a folder."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read()


class Maildir:
    """A Maildir's new/ and cur/; handled messages move to its .processed sub-Maildir."""

    name = "maildir"

    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.expanduser(path))
        if not (self.path / "cur").is_dir() or not (self.path / "new").is_dir():
            raise InputError("not a Maildir (no cur/ and new/ in it)", path=self.path)
        self.processed = self.path / f".{PROCESSED}"

    def messages(self) -> Iterator[Item]:
        files = []
        for sub in ("new", "cur"):
            try:
                files += sorted((self.path / sub).iterdir())
            except OSError as exc:
                raise InputError(f"cannot read {sub}/: {exc.strerror}", path=self.path) from None
        for path in files:
            if path.name.startswith("."):
                continue
            try:
                data = _regular_file(path)
            except FileNotFoundError:  # another reader took it meanwhile
                continue
            except OSError as exc:
                raise InputError(f"cannot read it: {exc.strerror}", path=path) from None
            if data is not None:
                yield Item(str(path), f"{path.parent.name}/{path.name}", data)

    def done(self, item: Item) -> None:
        source = Path(item.key)
        name = source.name if ":2," in source.name else source.name + ":2,S"
        try:
            for sub in ("tmp", "new", "cur"):
                (self.processed / sub).mkdir(parents=True, exist_ok=True)
            (self.processed / "maildirfolder").touch()
            source.rename(self.processed / "cur" / name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise InputError(
                f"cannot move it to {self.processed}: {exc.strerror}", path=source
            ) from None

    def close(self) -> None:
        pass


class Mbox:
    """An mbox file, read only: handled messages stay; their ids in the ledger mark them."""

    name = "mbox"

    def __init__(self, path: Path) -> None:
        import mailbox

        self.path = Path(os.path.expanduser(path))
        try:
            with self.path.open("rb") as fh:
                head = fh.read(5)
            self.box = mailbox.mbox(self.path, create=False)
        except OSError as exc:
            raise InputError(
                f"cannot read the mbox: {exc.strerror or exc}", path=self.path
            ) from None
        if head and head != b"From ":
            raise InputError("not an mbox (it does not start with a 'From ' line)", path=self.path)

    def messages(self) -> Iterator[Item]:
        for number, key in enumerate(self.box.keys(), 1):
            yield Item(str(key), f"message {number}", self.box.get_bytes(key))

    def done(self, item: Item) -> None:
        pass  # never rewritten: another program may be appending to it

    def close(self) -> None:
        self.box.close()


class IMAPUnavailable(MailerError):
    """The IMAP server cannot be reached (or its certificate is not trusted)."""

    exit_code = EXIT_UNAVAILABLE


class IMAPLoginRefused(MailerError):
    """The IMAP server refused the user name or password."""

    exit_code = EXIT_NOPERM


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Imap:
    """One folder over IMAP with TLS (certificate and host name verified); handled messages
    are moved to the `processed` folder (MOVE, else COPY, \\Deleted and EXPUNGE)."""

    name = "imap"

    def __init__(self, settings: Settings) -> None:
        s = settings
        for key in ("bounce_imap_host", "bounce_imap_user", "bounce_imap_password"):
            if not getattr(s, key):
                raise ConfigError(
                    f"--imap needs {key}",
                    hint=f"set {env_name(key)}"
                    + (" in .env" if key.endswith("password") else " or it in mailer.toml"),
                )
        self.where = f"{s.bounce_imap_host}:{s.bounce_imap_port}"
        self.password = s.bounce_imap_password
        try:
            context = ssl.create_default_context(cafile=s.bounce_imap_cafile or None)
        except OSError as exc:
            raise ConfigError(
                f"bounce_imap_cafile {s.bounce_imap_cafile}: {exc.strerror or exc}"
            ) from None
        try:
            self.conn = imaplib.IMAP4_SSL(
                s.bounce_imap_host, s.bounce_imap_port, ssl_context=context, timeout=IMAP_TIMEOUT
            )
        except ssl.SSLCertVerificationError as exc:
            raise IMAPUnavailable(
                f"{self.where}: the server's TLS certificate is not trusted ({exc.verify_message})",
                hint="fix the certificate, or name its CA in MAILER_BOUNCE_IMAP_CAFILE",
            ) from None
        except (OSError, imaplib.IMAP4.error) as exc:
            raise IMAPUnavailable(f"cannot reach the IMAP server at {self.where}: {exc}") from None
        try:
            self.conn.login(s.bounce_imap_user, s.bounce_imap_password)
        except imaplib.IMAP4.error as exc:
            self._drop()
            # One line, no hint: what to check is in it; the password never is.
            raise IMAPLoginRefused(
                f"{self.where} refused the login for {s.bounce_imap_user!r}: {self._say(exc)}"
                " (check MAILER_BOUNCE_IMAP_USER and MAILER_BOUNCE_IMAP_PASSWORD)"
            ) from None
        except OSError as exc:
            raise IMAPUnavailable(f"{self.where}: the connection failed: {exc}") from None
        self.folder = s.bounce_imap_folder
        typ, data = self._call(self.conn.select, _quote(self.folder))
        if typ != "OK":
            self.close()
            raise ConfigError(
                f"{self.where}: cannot open folder {self.folder!r}: {self._say(data)}",
                hint="set bounce_imap_folder (MAILER_BOUNCE_IMAP_FOLDER) to a folder that exists",
            )
        # Asked again: servers (Dovecot) list MOVE and UIDPLUS only once logged in.
        typ, data = self._call(self.conn.capability)
        words = data[0].split() if typ == "OK" and data and isinstance(data[0], bytes) else []
        self.capabilities = {w.decode("ascii", "replace").upper() for w in words}
        self._made_processed = False

    def _say(self, what: object) -> str:
        """Server text for a message: one line, the password never in it."""
        if isinstance(what, list):
            what = b" ".join(w for w in what if isinstance(w, bytes))
        text = what.decode("utf-8", "replace") if isinstance(what, bytes) else str(what)
        text = " ".join(text.split())
        return text.replace(self.password, "********") if self.password else text

    def _call(self, method: Callable[..., tuple[str, Any]], *args: str) -> tuple[str, list[Any]]:
        try:
            return method(*args)
        except (imaplib.IMAP4.abort, OSError) as exc:
            raise IMAPUnavailable(
                f"{self.where}: the connection failed: {self._say(exc)}"
            ) from None
        except imaplib.IMAP4.error as exc:
            raise IMAPUnavailable(f"{self.where}: {self._say(exc)}") from None

    def messages(self) -> Iterator[Item]:
        typ, data = self._call(self.conn.uid, "SEARCH", "ALL")
        uids = data[0].split() if typ == "OK" and data and isinstance(data[0], bytes) else []
        for uid in uids:
            typ, fetched = self._call(self.conn.uid, "FETCH", uid.decode(), "(BODY.PEEK[])")
            body = next((p[1] for p in fetched if isinstance(p, tuple) and len(p) == 2), None)
            if typ == "OK" and isinstance(body, bytes):  # gone meanwhile: nothing to read
                yield Item(uid.decode(), f"uid {uid.decode()}", body)

    def done(self, item: Item) -> None:
        if not self._made_processed:
            typ, data = self._call(self.conn.list, '""', _quote(PROCESSED))
            if not any(isinstance(d, bytes) for d in data):
                self._call(self.conn.create, _quote(PROCESSED))
            self._made_processed = True
        if "MOVE" in self.capabilities:
            typ, data = self._call(self.conn.uid, "MOVE", item.key, _quote(PROCESSED))
        else:
            typ, data = self._call(self.conn.uid, "COPY", item.key, _quote(PROCESSED))
            if typ == "OK":
                self._call(self.conn.uid, "STORE", item.key, "+FLAGS.SILENT", "(\\Deleted)")
                if "UIDPLUS" in self.capabilities:  # only this message
                    self._call(self.conn.uid, "EXPUNGE", item.key)
                else:
                    self._call(self.conn.expunge)
        if typ != "OK":
            raise IMAPUnavailable(
                f"{self.where}: cannot move {item.label} to {PROCESSED!r}: {self._say(data)}"
            )

    def _drop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.shutdown()

    def close(self) -> None:
        try:
            self.conn.logout()
        except (imaplib.IMAP4.error, OSError):
            self._drop()
