"""The signup form's use case: a pending reader and their confirmation mail, the confirmed
reader and their welcome issue. The web side (mailer/web/signup.py) calls these from one
background worker, off the request path, so a reply never tells who is already known.

    Signups.subscribe()  a form's signup: pending (or confirmed at once without double opt-in)
    Signups.confirm()    a followed link: confirmed, then the welcome issue
    confirm_url()        the link a confirmation mail holds
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from html import escape
from typing import Protocol
from urllib.parse import quote

from mailer.compose import load as load_mod
from mailer.compose.render import Email, render
from mailer.config import Settings
from mailer.deliver import dkim as dkim_mod
from mailer.deliver.audience import Audience, History
from mailer.deliver.message import Composer, Message, clean_header_text
from mailer.deliver.options import SendOptions
from mailer.deliver.sender import Sender
from mailer.deliver.summary import Recorder
from mailer.deliver.tokens import sign_confirm
from mailer.deliver.transports import Result, Transport, factory
from mailer.state.reader_rows import Reader, Wanted, forget_key
from mailer.state.subscribers import Subscriber
from mailer.states import SubscriberStatus
from mailer.when import now as current_time

DEFAULT_PATH = "/subscribe"
DAY = 86400.0
HOUR = 3600.0


class Store(History, Recorder, Protocol):
    """The ledger as signups use it: the readers, and the deliveries of the welcome issue."""

    def reader(self, email: str) -> Reader | None: ...
    def signup(self, want: Wanted) -> Reader: ...
    def confirm(self, email: str, forgotten_key: str = "") -> Reader | None: ...


@dataclass(frozen=True)
class Signup:
    """One signup as the form sent it, already checked: what the worker stores."""

    email: str  # normalised by check_email
    name: str
    form_url: str  # the page the form was on, when it is ours; "" if not known


@dataclass(frozen=True)
class Outcome:
    """What a signup or a confirmation did (for the log and the tests; never for the reply)."""

    email: str
    status: SubscriberStatus | None
    mailed: str = ""  # "confirmation", "welcome" or ""
    reply: str = ""


def confirm_url(settings: Settings, token: str) -> str:
    """{subscribe_url}/confirm?token=T (a path alone when subscribe_url is not set)."""
    base = (settings.subscribe_url or DEFAULT_PATH).split("?", 1)[0].rstrip("/")
    return f"{base}/confirm?token={quote(token, safe='')}"


def confirmation(settings: Settings, email: str, url: str) -> Message:
    """The confirmation mail: one link, text and HTML, signed with DKIM when configured."""
    name = settings.list_name
    msg = EmailMessage()
    msg["From"] = settings.from_
    msg["To"] = email
    msg["Subject"] = clean_header_text(f"Please confirm your subscription to {name}")
    msg["Date"] = formatdate(localtime=False)
    domain = parseaddr(settings.from_)[1].rpartition("@")[2] or "localhost"
    msg["Message-ID"] = make_msgid("confirm", domain=domain)
    if settings.reply_to:
        msg["Reply-To"] = settings.reply_to
    msg["Auto-Submitted"] = "auto-generated"  # no vacation replies to a confirmation
    text = (
        f"Someone, probably you, asked to receive {name} at this address.\n\n"
        f"To confirm, open this link and press the button:\n{url}\n\n"
        "If it was not you, ignore this mail: nothing will be sent to you.\n"
    )
    msg.set_content(text)
    href = escape(url, quote=True)
    msg.add_alternative(
        f"<p>Someone, probably you, asked to receive {escape(name)} at this address.</p>\n"
        f'<p><a href="{href}">Confirm your subscription</a></p>\n'
        "<p>If it was not you, ignore this mail: nothing will be sent to you.</p>\n",
        subtype="html",
    )
    data = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    signer = dkim_mod.load(settings)
    if signer is not None:
        data = signer.sign(data)
    sender = parseaddr(settings.from_)[1]
    return Message(email, str(msg["Message-ID"]), data, settings.bounce_address or sender)


class Welcome:
    """The `welcome` issue, rendered once (again when its file changes), sent to one reader
    at a time through the same Sender as any issue and recorded in the ledger."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stamp: tuple[int, int] | None = None
        self._email: Email | None = None
        self._composer: Composer | None = None

    def _rendered(self) -> tuple[Email, Composer]:
        path = load_mod.resolve(self.settings.welcome, self.settings.root)
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if self._email is None or self._composer is None or stamp != self._stamp:
            email = render(load_mod.read(self.settings, path), self.settings)
            self._composer = Composer(email, self.settings, signer=dkim_mod.load(self.settings))
            self._email, self._stamp = email, stamp
        return self._email, self._composer

    def send(self, store: Store, reader: Reader) -> str:
        """Send the welcome issue to `reader` unless the ledger says they had it: the reply."""
        email, composer = self._rendered()
        slug = email.issue.slug
        secret = self.settings.signing_secret
        audience = Audience.of(store, slug, secret=secret)
        options = dataclasses.replace(
            SendOptions.from_settings(self.settings), connections=1, max_attempts=2
        ).unpaced()
        transports = factory(self.settings, composer.envelope_from)
        sender = Sender(email, composer, transports, store, options, audience=audience)
        summary = sender.run([Subscriber(reader.email, reader.name, reader.fields, 0)], 1)
        if summary.sent:
            return "sent"
        return "already sent" if summary.already_done else "not sent"


class Window:
    """Events in a sliding window, per key: how many there were lately, and when the oldest
    of them leaves the window."""

    def __init__(self, span: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.span = span
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._swept = clock()

    def take(self, key: str, most: int) -> float:
        """0 and count one more if `key` had fewer than `most` lately, else seconds to wait."""
        now = self.clock()
        with self._lock:
            if now - self._swept > self.span:  # forget keys that went quiet: memory is bounded
                self._seen = {k: q for k, q in self._seen.items() if q and now - q[-1] < self.span}
                self._swept = now
            seen = self._seen.setdefault(key, deque())
            while seen and now - seen[0] >= self.span:
                seen.popleft()
            if len(seen) >= most:
                return max(0.001, self.span - (now - seen[0]))
            seen.append(now)
            return 0.0


class Signups:
    """Signups and confirmations: the store's readers, the mails they cause, the caps."""

    def __init__(
        self,
        settings: Settings,
        store: Callable[[], Store],
        transports: Callable[[], Transport] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        sender = parseaddr(settings.from_)[1]
        self.transports = transports or factory(settings, settings.bounce_address or sender)
        self.welcome = Welcome(settings) if settings.welcome else None
        self.hourly = Window(HOUR)
        self.daily = Window(DAY)  # per address, keyed by a hash: no address kept in memory

    def subscribe(self, signup: Signup) -> Outcome:
        """Store the signup; mail a confirmation (or, without double opt-in, confirm now)."""
        store = self.store()
        known = store.reader(signup.email)
        if known is not None and known.status == SubscriberStatus.CONFIRMED:
            return Outcome(signup.email, known.status)  # already in: nothing to confirm
        reader = store.signup(
            Wanted(
                signup.email,
                SubscriberStatus.PENDING,
                "form",
                signup.name,
                form_url=signup.form_url,
            )
        )
        if not self.settings.double_opt_in:
            confirmed = self.confirm(signup.email)
            return self.welcome_to(confirmed) if confirmed else Outcome(signup.email, None)
        # Once a day, by the store (kept across restarts and shared by every server): a
        # reader already pending since less than a day was mailed then; and by this process.
        recent = known is not None and known.status == SubscriberStatus.PENDING
        if recent and known and current_time() - known.consent.signed_up_at < timedelta(days=1):
            return Outcome(signup.email, reader.status, reply="one confirmation a day")
        key = hashlib.sha256(signup.email.lower().encode()).hexdigest()
        if self.daily.take(key, 1):
            return Outcome(signup.email, reader.status, reply="one confirmation a day")
        if self.hourly.take("", self.settings.confirm_per_hour):
            return Outcome(signup.email, reader.status, reply="confirm_per_hour reached")
        token = sign_confirm(
            self.settings.signing_secret, self.settings.list_id_effective, signup.email
        )
        message = confirmation(self.settings, reader.email, confirm_url(self.settings, token))
        result = self._send(message)
        return Outcome(signup.email, reader.status, "confirmation", result.reply)

    def confirm(self, email: str) -> Reader | None:
        """The reader followed their link: confirmed (their suppression lifted). None when
        there is no such reader; pressing twice changes nothing."""
        return self.store().confirm(email, forget_key(self.settings.signing_secret, email))

    def welcome_to(self, reader: Reader) -> Outcome:
        """The welcome issue to a confirmed reader, once (the ledger remembers)."""
        if self.welcome is None or reader.status != SubscriberStatus.CONFIRMED:
            return Outcome(reader.email, reader.status)
        return Outcome(
            reader.email, reader.status, "welcome", self.welcome.send(self.store(), reader)
        )

    def _send(self, message: Message) -> Result:
        transport = self.transports()
        transport.open()
        try:
            return transport.send(message)
        finally:
            transport.close()
