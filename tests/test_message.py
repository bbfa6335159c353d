"""One reader's message (deliver.message.Composer), parsed back with Python's email parser."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from email.message import EmailMessage
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import greeting_templates, seed_project

from mailer import config
from mailer.compose import issue as issue_mod
from mailer.compose import render as render_mod
from mailer.compose.render import Email
from mailer.deliver.message import Composer, clean_header_text
from mailer.deliver.tokens import verify
from mailer.errors import ConfigError, InputError
from mailer.state.subscribers import Subscriber

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret"
SUBJECT = (
    "NLP Newsletter #2 [EN]: Reformer, DeepMath, ELECTRA, TinyBERT for Search, VizSeq,"
    " Open-Sourcing ML,\u2026"
)
# A template that puts subscriber data in the body, where it must be escaped in HTML.
GREETING = (
    "<mj-section><mj-column><mj-text>Hello {{ subscriber.name }} from {{ subscriber.city }}"
    ' (<a href="https://example.org/p?who={{ subscriber.email }}">profile</a>)'
    "</mj-text></mj-column></mj-section>"
)


def settings_for(project: Path, **env: str) -> config.Settings:
    return config.load(project, environ={"MAILER_SECRET": SECRET, **env})


@pytest.fixture(scope="module")
def project(module_project: Path) -> Path:
    return module_project


@pytest.fixture(scope="module")
def settings(project: Path) -> config.Settings:
    return settings_for(project)


@pytest.fixture(scope="module")
def rendered(project: Path, settings: config.Settings) -> Email:
    return render_mod.render(issue_mod.read(project / "issues" / "issue-2.md"), settings)


@pytest.fixture(scope="module")
def greeting(tmp_path_factory: pytest.TempPathFactory) -> tuple[config.Settings, Email]:
    """issue-2 rendered with a template that greets the reader by name and city."""
    root = seed_project(tmp_path_factory.mktemp("greeting"))
    greeting_templates(root, GREETING)
    s = settings_for(root)
    return s, render_mod.render(issue_mod.read(root / "issues" / "issue-2.md"), s)


def parse(data: bytes) -> EmailMessage:
    """As the tests' SMTP server parses: CRLF -> LF, policy.default."""
    msg = email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def head_of(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def sub(address: str, name: str = "", **fields: str) -> Subscriber:
    return Subscriber(address, name, fields, 2)


def parts(msg: EmailMessage) -> tuple[EmailMessage, EmailMessage]:
    assert msg.get_content_type() == "multipart/alternative"
    got = list(msg.iter_parts())
    assert [p.get_content_type() for p in got] == ["text/plain", "text/html"]
    return got[0], got[1]  # type: ignore[return-value]


# -- headers ------------------------------------------------------------------------------


def test_headers(rendered: Email, settings: config.Settings) -> None:
    composer = Composer(rendered, settings)
    message = composer.compose(sub("ada@example.com", "Ada Lovelace"))
    msg = parse(message.data)
    assert msg["From"] == "NLP Newsletter <newsletter@example.org>"
    assert msg["To"] == "Ada Lovelace <ada@example.com>"
    assert msg["Subject"] == SUBJECT
    assert msg["Reply-To"] == "editors@example.org"
    assert msg["List-Id"] == "NLP Newsletter <nlp-newsletter.example.org>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Precedence"] == "bulk"
    assert msg["MIME-Version"] == "1.0"
    assert parsedate_to_datetime(msg["Date"]).tzinfo is not None
    assert message.message_id == msg["Message-ID"]
    assert re.fullmatch(r"<issue-2\.[0-9a-f]{32}@example\.org>", msg["Message-ID"])
    assert message.recipient == "ada@example.com"
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe"):
        assert len(msg.get_all(name) or []) == 1, name
    assert not msg.defects


def test_date_can_be_given(rendered: Email, settings: config.Settings) -> None:
    date = "Tue, 01 Dec 2026 08:00:00 +0000"
    msg = parse(Composer(rendered, settings).compose(sub("a@example.com"), date=date).data)
    assert msg["Date"] == date


def test_non_ascii_to_name_is_rfc2047(rendered: Email, settings: config.Settings) -> None:
    message = Composer(rendered, settings).compose(sub("zoe@example.com", "Zoë Martin"))
    head = head_of(message.data)
    head.decode("ascii")  # every header is 7-bit on the wire
    assert b"=?utf-8?" in head
    msg = parse(message.data)
    assert msg["Subject"] == SUBJECT  # the long subject's ellipsis survives the round trip
    assert msg["To"].addresses[0].display_name == "Zoë Martin"
    assert msg["To"].addresses[0].addr_spec == "zoe@example.com"


@pytest.mark.parametrize(
    "subject", ["Grüße aus Berlin", "Issue #3 \u2014 short", "\u65b0\u95fb", "Caf\u00e9"]
)
def test_short_non_ascii_subject(rendered: Email, settings: config.Settings, subject: str) -> None:
    message = Composer(dataclasses.replace(rendered, subject=subject), settings).compose(
        sub("a@example.com")
    )
    head_of(message.data).decode("ascii")
    assert parse(message.data)["Subject"] == subject


def test_non_ascii_from_name_is_rfc2047(rendered: Email, project: Path) -> None:
    s = settings_for(project, MAILER_FROM="Zoë's Newsletter <news@example.org>")
    message = Composer(rendered, s).compose(sub("zoe@example.com", "Zoë Martin"))
    head_of(message.data).decode("ascii")
    msg = parse(message.data)
    assert msg["From"].addresses[0].display_name == "Zoë's Newsletter"
    assert msg["From"].addresses[0].addr_spec == "news@example.org"
    assert msg["Message-ID"].endswith("@example.org>")  # on the sender's domain


def test_multipart_alternative_text_first_then_html(
    rendered: Email, settings: config.Settings
) -> None:
    msg = parse(Composer(rendered, settings).compose(sub("ada@example.com")).data)
    text, html = parts(msg)
    for part in (text, html):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert text.get_content().startswith("NLP Newsletter #2 [EN]")
    assert html.get_content().lstrip().lower().startswith("<!doctype html>")
    assert "Welcome back to the NLP Newsletter! \U0001f44b" in text.get_content()


def test_crlf_only_and_every_line_under_998_octets(
    rendered: Email, settings: config.Settings
) -> None:
    data = Composer(rendered, settings).compose(sub("ada@example.com", "Ada")).data
    assert data.endswith(b"\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) < 998
    # The body is quoted-printable: no line over 76 characters.
    body = data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    body.decode("ascii")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("x" * 1500, id="long-ascii-name"),
        pytest.param("李" * 400, id="long-cjk-name"),
        pytest.param("Zoë " * 300, id="long-accented-name"),
    ],
)
def test_long_names_keep_lines_under_998(
    rendered: Email, settings: config.Settings, name: str
) -> None:
    data = Composer(rendered, settings).compose(sub("long@example.com", name)).data
    assert max(len(line) for line in data.split(b"\r\n")) < 998
    msg = parse(data)
    assert msg["To"].addresses[0].addr_spec == "long@example.com"


def test_list_unsubscribe_with_signed_token(rendered: Email, settings: config.Settings) -> None:
    composer = Composer(rendered, settings)
    msg = parse(composer.compose(sub("Ada@Example.com")).data)
    value = " ".join(msg["List-Unsubscribe"].split())
    targets = re.findall(r"<([^>]+)>", value)
    assert len(targets) == 2
    https, mailto = targets
    prefix, signed = mailto.split("%20")  # the subject carries the same signed token
    assert prefix == "mailto:unsubscribe@example.org?subject=unsubscribe"
    assert verify(SECRET, "nlp-newsletter.example.org", signed) == "ada@example.com"
    url = urlsplit(https)
    assert (url.scheme, url.netloc, url.path) == ("https", "newsletter.example.org", "/unsubscribe")
    [token] = parse_qs(url.query)["token"]
    assert verify(SECRET, "nlp-newsletter.example.org", token) == "ada@example.com"
    # The same link is in both bodies (the footer's Unsubscribe).
    text, html = parts(msg)
    assert https in text.get_content()
    assert https.replace("&", "&amp;") in html.get_content() or https in html.get_content()


def test_tokens_differ_per_subscriber_and_need_the_secret(
    rendered: Email, settings: config.Settings, project: Path
) -> None:
    composer = Composer(rendered, settings)
    a, b = composer.unsubscribe_url("a@example.com"), composer.unsubscribe_url("b@example.com")
    assert a != b
    other = Composer(rendered, settings_for(project, MAILER_SECRET="another-secret"))
    assert other.unsubscribe_url("a@example.com") != a


def test_no_unsubscribe_headers_without_targets(rendered: Email, project: Path) -> None:
    s = dataclasses.replace(settings_for(project), unsubscribe_url="", unsubscribe_mailto="")
    msg = parse(Composer(rendered, s).compose(sub("a@example.com")).data)
    assert msg["List-Unsubscribe"] is None
    assert msg["List-Unsubscribe-Post"] is None


def test_mailto_only_has_no_one_click_header(rendered: Email, project: Path) -> None:
    s = dataclasses.replace(settings_for(project), unsubscribe_url="")
    msg = parse(Composer(rendered, s).compose(sub("a@example.com")).data)
    prefix, signed = msg["List-Unsubscribe"].split("%20")
    assert prefix == "<mailto:unsubscribe@example.org?subject=unsubscribe"
    assert verify(SECRET, "nlp-newsletter.example.org", signed.rstrip(">")) == "a@example.com"
    assert msg["List-Unsubscribe-Post"] is None  # RFC 8058 needs an https URI


def test_message_id_is_stable_per_reader_and_unique(
    rendered: Email, settings: config.Settings
) -> None:
    composer = Composer(rendered, settings)
    ids = {composer.compose(sub(f"r{i}@example.com")).message_id for i in range(50)}
    assert len(ids) == 50
    first = composer.compose(sub("ada@example.com")).message_id
    assert composer.compose(sub("ada@example.com")).message_id == first
    assert composer.message_id("ADA@example.com") == first


def test_missing_from_is_a_config_error(rendered: Email, project: Path) -> None:
    s = dataclasses.replace(settings_for(project), from_="")
    with pytest.raises(ConfigError, match="from"):
        Composer(rendered, s)


# -- header injection ---------------------------------------------------------------------

INJECTIONS = [
    "Mallory\r\nBcc: evil@example.com",
    "Mallory\nBcc: evil@example.com",
    "Mallory\rBcc: evil@example.com",
    "Mallory\r\n\r\nBody: evil",
    "Mallory\x85Bcc: evil@example.com",
    "Mallory\u2028Bcc: evil@example.com",
    "Mallory\x00\x0bBcc: evil@example.com",
]


@pytest.mark.parametrize("name", INJECTIONS)
def test_cr_lf_in_a_name_cannot_inject_a_header(
    rendered: Email, settings: config.Settings, name: str
) -> None:
    data = Composer(rendered, settings).compose(sub("mallory@example.org", name)).data
    head = head_of(data)
    assert not re.search(rb"(?im)^(bcc|body):", head)
    msg = parse(data)
    assert msg["Bcc"] is None and msg["Body"] is None
    assert len(msg.get_all("To")) == 1
    assert [a.addr_spec for a in msg["To"].addresses] == ["mallory@example.org"]
    assert "evil" in msg["To"].addresses[0].display_name  # kept as text, not as a header


def test_cr_lf_in_subject_and_from_cannot_inject(rendered: Email, project: Path) -> None:
    s = dataclasses.replace(
        settings_for(project),
        from_="News\r\nBcc: evil@example.com <news@example.org>",
        reply_to="editors@example.org\r\nBcc: evil2@example.com",
    )
    evil = dataclasses.replace(rendered, subject="Hello\r\nBcc: evil3@example.com\r\n\r\nhi")
    data = Composer(evil, s).compose(sub("a@example.com")).data
    assert not re.search(rb"(?im)^bcc:", head_of(data))
    msg = parse(data)
    assert msg["Bcc"] is None
    assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]
    assert len(msg.get_all("From")) == 1 and len(msg.get_all("Reply-To")) == 1
    parts(msg)  # the body is still where it belongs


def test_clean_header_text() -> None:
    assert clean_header_text("a\r\nb\tc\x00d  e") == "a b c d e"
    assert clean_header_text("  Zoë  ") == "Zoë"


# -- the body: personalisation and escaping ---------------------------------------------

TRICKY = [
    pytest.param("Ada Lovelace", "London", id="plain"),
    pytest.param("<b>html</b>", 'Paris "&" <script>alert(1)</script>', id="html"),
    pytest.param("Zoë Martin", "São Paulo", id="accents"),
    pytest.param("李雷", "北京", id="cjk"),
    pytest.param("a=b =3D ==", "x=\ny", id="equals"),
    pytest.param("trailing  ", "  leading", id="spaces"),
    pytest.param("x" * 300, "y" * 250 + "é" * 40, id="long-values"),
    pytest.param(".", "..\n.", id="dots"),
    pytest.param("", "", id="empty"),
    pytest.param("--=_mailer_", "=_mailer_boundary--", id="boundary-like"),
]


@pytest.mark.parametrize(("name", "city"), TRICKY)
def test_parts_decode_to_the_personalised_text_and_html(
    greeting: tuple[config.Settings, Email], name: str, city: str
) -> None:
    settings, rendered = greeting
    composer = Composer(rendered, settings)
    reader = sub("reader@example.com", name, city=city)
    data = composer.compose(reader).data
    body = data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    assert max(len(line) for line in data.split(b"\r\n")) < 998
    text, html = parts(parse(data))
    want_html, want_text = composer.personalise(reader)
    assert text.get_content() == want_text.replace("\r\n", "\n")
    assert html.get_content() == want_html.replace("\r\n", "\n")


def test_subscriber_data_is_escaped_in_html_only(greeting: tuple[config.Settings, Email]) -> None:
    settings, rendered = greeting
    reader = sub("html@example.net", "<b>html</b>", city='"Paris" & <i>co</i>')
    text, html = parts(parse(Composer(rendered, settings).compose(reader).data))
    h, t = html.get_content(), text.get_content()
    assert "Hello &lt;b&gt;html&lt;/b&gt; from &quot;Paris&quot; &amp; &lt;i&gt;co&lt;/i&gt;" in h
    assert "<b>html</b>" not in h and "<i>co</i>" not in h
    assert 'Hello <b>html</b> from "Paris" & <i>co</i>' in t


def test_empty_name_falls_back(greeting: tuple[config.Settings, Email]) -> None:
    settings, rendered = greeting
    text, html = parts(parse(Composer(rendered, settings).compose(sub("a@example.com")).data))
    assert "Hello there from " in text.get_content()
    assert "Hello there from " in html.get_content()


def test_each_reader_gets_their_own_values(greeting: tuple[config.Settings, Email]) -> None:
    settings, rendered = greeting
    composer = Composer(rendered, settings)
    readers = [sub(f"r{i}@example.com", f"Reader {i}", city=f"City {i}") for i in range(5)]
    for reader in readers:
        text, html = parts(parse(composer.compose(reader).data))
        t = text.get_content()
        assert f"Hello {reader.name} from {reader.fields['city']}" in t
        assert f"You receive this because {reader.email} subscribed" in t
        assert composer.unsubscribe_url(reader.email) in t
        others = [r for r in readers if r is not reader]
        assert not any(f"Hello {o.name} " in t for o in others)
        assert not any(o.email in html.get_content() for o in others)


def test_composing_never_renders(
    greeting: tuple[config.Settings, Email], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, rendered = greeting
    composer = Composer(rendered, settings)

    def boom(*args: object, **kwargs: object) -> str:
        raise AssertionError("rendered again while composing")

    for name in ("render", "compile_mjml", "inline_css"):
        monkeypatch.setattr(render_mod, name, boom)
    for i in range(20):
        composer.compose(sub(f"r{i}@example.com", f"R {i}", city="x"))


def test_unknown_template_field_is_an_input_error(
    greeting: tuple[config.Settings, Email],
) -> None:
    settings, rendered = greeting
    composer = Composer(rendered, settings)
    composer.check_fields({"city"})
    with pytest.raises(InputError, match="city"):
        composer.check_fields(set())


def test_from_display_name_is_parsed(rendered: Email, settings: config.Settings) -> None:
    composer = Composer(rendered, settings)
    assert composer.envelope_from == "newsletter@example.org"
    # Without bounce_address every copy's envelope sender is the From address, as before.
    message = composer.compose(Subscriber("ada@example.com", "Ada", {}, 2))
    assert message.envelope_from == "newsletter@example.org"
    assert composer.domain == "example.org"
    assert parseaddr(settings.from_)[0] == "NLP Newsletter"
