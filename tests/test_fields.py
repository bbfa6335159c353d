"""Merge fields in an issue's text (`Hi {{ subscriber.name }}`): filled per reader, escaped in
HTML, defaulted, received as sent by the real SMTP server, and an unknown one refused."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import Result
from conftest import MailerCli, one_line_error, smtp_env
from smtp_server import SMTPServer

from mailer import config
from mailer.compose.issue import read
from mailer.compose.render import Email, render
from mailer.deliver.message import Composer
from mailer.state.subscribers import Subscriber

SECRET = "test-secret-of-the-fields"
BODY = """\
Hi {{ subscriber.name | default("friend") }}, from {{ subscriber.city }}.

Dear {{subscriber.name}} <{{ subscriber.email }}>, or {{ subscriber.name | default('you') }}.

Not fields: {{ subscriber.name | upper }}, {{ issue.title }} and `{{ subscriber.name }}`.

```
{{ subscriber.city }}
```
"""
ISSUE = f"---\ntitle: Fields\n---\n\n{BODY}"
# What a send accepts: leftover template syntax (even in code, in the text part) is refused.
SENDABLE = ISSUE.split("\nNot fields:", 1)[0]
UNKNOWN = "{{ subscriber.plan }}"
LIST = (
    "email,name,city\n"
    "ann@example.com,Ann,Oslo\n"
    'bo@example.com,"<b>Ann & ""Bo""</b>",<i>Paris</i>\n'
    "nobody@example.com,,\n"
)
ESCAPED = "&lt;b&gt;Ann &amp; &quot;Bo&quot;&lt;/b&gt;"


def _project(root: Path, body: str = ISSUE) -> Path:
    (root / "issues").mkdir(parents=True)
    (root / "issues" / "fields.md").write_text(body, encoding="utf-8")
    (root / "mailer.toml").write_text(
        Path(__file__).resolve().parents[1].joinpath("mailer.toml").read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    (root / "subscribers.csv").write_text(LIST, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[config.Settings, Email]:
    root = _project(tmp_path_factory.mktemp("fields"))
    settings = config.load(root, environ={"MAILER_SECRET": SECRET})
    return settings, render(read(root / "issues" / "fields.md"), settings)


def _reader(name: str, city: str = "", address: str = "ann@example.com") -> Subscriber:
    return Subscriber(address, name, {"city": city}, 2)


def _content(html: str) -> str:
    """The issue's own paragraphs in the HTML part, tags kept."""
    return " ".join(re.findall(r"<p\b[^>]*>(.*?)</p>", html, re.S))


def test_fields_are_filled_for_each_reader(rendered) -> None:
    settings, email_ = rendered
    composer = Composer(email_, settings)
    html, text = composer.personalise(_reader("Ann", "Oslo"))
    assert "Hi Ann, from Oslo." in html and "Hi Ann, from Oslo." in text
    assert "Dear Ann &lt;ann@example.com&gt;, or Ann." in _content(html)
    assert "Dear Ann <ann@example.com>, or Ann." in " ".join(text.split())
    assert email_.fields() >= {"name", "email", "city"}
    assert "%%mailer:" not in html + text


def test_values_are_escaped_in_html_and_plain_in_text(rendered) -> None:
    settings, email_ = rendered
    html, text = Composer(email_, settings).personalise(_reader('<b>Ann & "Bo"</b>', "<i>P</i>"))
    assert f"Hi {ESCAPED}, from &lt;i&gt;P&lt;/i&gt;." in html
    assert "<b>Ann" not in html and "<i>P" not in html
    assert 'Hi <b>Ann & "Bo"</b>, from <i>P</i>.' in text


def test_an_empty_name_gets_the_default(rendered) -> None:
    settings, email_ = rendered
    html, text = Composer(email_, settings).personalise(_reader("", ""))
    content = _content(html)
    # default("friend"), default('you'), and name_fallback ("there") where none is given
    assert "Hi friend, from ." in content
    assert "Dear there &lt;ann@example.com&gt;, or you." in content
    assert "Hi friend, from ." in text and "Dear there <ann@example.com>, or you." in text


def test_anything_else_stays_as_written(rendered) -> None:
    settings, email_ = rendered
    html, text = Composer(email_, settings).personalise(_reader("Ann", "Oslo"))
    for part in (html, text):
        assert "{{ subscriber.name | upper }}" in part and "{{ issue.title }}" in part
        assert "`{{ subscriber.name }}`" in text or "<code" in html
    assert "{{ subscriber.city }}" in html.split("<pre", 1)[1]  # code is code
    assert "    {{ subscriber.city }}" in text
    liquid = [n for n in email_.notices if n.code == "liquid"]
    assert [n.message for n in liquid] == [
        "Liquid tag left in the text: {{ subscriber.name | upper }}",
        "Liquid tag left in the text: {{ issue.title }}",
    ]
    assert {n.line for n in liquid} == {9}
    assert [(f.field, f.default, f.line) for f in email_.issue.fields] == [
        ("name", "friend", 5),
        ("city", None, 5),
        ("name", None, 7),
        ("email", None, 7),
        ("name", "you", 7),
    ]


def test_the_preheader_taken_from_the_body_is_filled_too(rendered) -> None:
    settings, email_ = rendered
    composer = Composer(email_, settings)
    assert composer.preheader(_reader('<b>Ann & "Bo"</b>', "Oslo")).startswith(
        'Hi <b>Ann & "Bo"</b>, from Oslo.'
    )
    html, _ = composer.personalise(_reader('<b>Ann & "Bo"</b>', "Oslo"))
    hidden = re.search(r'<div style="display:none[^>]*>(.*?)</div>', html, re.S)
    assert hidden is not None and hidden.group(1).strip().startswith(f"Hi {ESCAPED}, from Oslo.")


def test_no_value_can_add_a_header_or_a_part(rendered) -> None:
    settings, email_ = rendered
    composer = Composer(email_, settings)
    evil = f"x\r\nBcc: evil@example.com\r\n\r\n--{composer.boundary}\r\nContent-Type: text/html"
    message = email.message_from_bytes(
        composer.compose(_reader(evil, "<script>alert(1)</script>")).data,
        policy=email.policy.default,
    )
    assert message["Bcc"] is None
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    html = parts[1].get_content()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# -- end to end: sent, received, refused ------------------------------------------------------


Run = Callable[..., Result]


@pytest.fixture
def run(mailer_cli: MailerCli) -> Run:
    """run(root, *args, server=None): `mailer -C root ARGS` against server (or a dead port)."""

    def invoke(root: Path, *args: str, server: SMTPServer | None = None) -> Result:
        return mailer_cli(root, *args, env=smtp_env(server) if server else smtp_env(port=1))

    return invoke


def _bodies(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


@pytest.fixture
def project(new_project: Callable[[str], Path], tmp_path: Path) -> Path:
    root = new_project(LIST)
    (root / "issues" / "fields.md").write_text(SENDABLE, encoding="utf-8")
    return root


def test_each_reader_receives_their_own_values(
    project: Path, smtp_server: SMTPServer, run: Run
) -> None:
    result = run(project, "send", "fields", "--yes", "--rate", "off", server=smtp_server)
    assert result.exit_code == 0, result.output
    got = {r.rcpt_tos[0]: r.message() for r in smtp_server.received}
    assert sorted(got) == ["ann@example.com", "bo@example.com", "nobody@example.com"]

    text, html = _bodies(got["ann@example.com"])
    assert "Hi Ann, from Oslo." in text and "Hi Ann, from Oslo." in html

    text, html = _bodies(got["bo@example.com"])
    assert f"Hi {ESCAPED}, from &lt;i&gt;Paris&lt;/i&gt;." in html
    assert "<b>Ann" not in html
    assert 'Hi <b>Ann & "Bo"</b>, from <i>Paris</i>.' in text

    text, html = _bodies(got["nobody@example.com"])
    assert "Hi friend, from ." in text and "Hi friend, from ." in html
    assert "Dear there <nobody@example.com>, or you." in " ".join(text.split())


def test_a_test_copy_uses_the_defaults(project: Path, smtp_server: SMTPServer, run: Run) -> None:
    result = run(project, "send", "fields", "--to", "me@example.org", server=smtp_server)
    assert result.exit_code == 0, result.output
    [received] = smtp_server.received
    text, _ = _bodies(received.message())
    assert "Hi friend, from ." in text


@pytest.mark.parametrize(
    "args",
    [
        ("build", "fields"),
        ("send", "fields", "--dry-run"),
        ("send", "fields", "--yes"),
        ("send", "fields", "--to", "me@example.org"),
    ],
)
def test_an_unknown_field_is_refused_with_its_line(
    project: Path, smtp_server: SMTPServer, args: tuple[str, ...], run: Run
) -> None:
    path = project / "issues" / "fields.md"
    path.write_text(SENDABLE + f"\nYour plan: {UNKNOWN}\n", encoding="utf-8")
    line = SENDABLE.count("\n") + 2
    result = run(project, *args, server=smtp_server)
    assert result.exit_code == 65, result.output
    assert one_line_error(result) == (
        f"Error: {path}:{line}: unknown merge field subscriber.plan; the fields are "
        "subscriber.email, subscriber.name, subscriber.first_name, subscriber.city "
        "(subscribers.csv)"
    )
    assert "hint" not in result.output
    assert smtp_server.received == []


def test_without_a_list_the_build_knows_the_built_in_fields(project: Path, run: Run) -> None:
    (project / "subscribers.csv").unlink()
    result = run(project, "build", "fields")
    assert result.exit_code == 65
    assert one_line_error(result).endswith(
        ":5: unknown merge field subscriber.city; the fields are subscriber.email, "
        "subscriber.name, subscriber.first_name (no subscriber list)"
    )


def test_the_preview_shows_the_chosen_reader_filled_in(project: Path) -> None:
    from mailer.preview.snapshot import build

    settings = config.load(project, environ={})
    path = project / "issues" / "fields.md"
    state = build(settings, path, "bo@example.com").state
    assert state["reader"]["email"] == "bo@example.com"
    assert f"Hi {ESCAPED}, from &lt;i&gt;Paris&lt;/i&gt;." in state["html"]
    assert 'Hi <b>Ann & "Bo"</b>, from <i>Paris</i>.' in state["text"]
    assert state["preheader"].startswith('Hi <b>Ann & "Bo"</b>, from <i>Paris</i>.')

    path.write_text(SENDABLE + f"\nYour plan: {UNKNOWN}\n", encoding="utf-8")
    state = build(settings, path, None).state
    [unknown] = [w for w in state["warnings"] if w["code"] == "fields"]
    assert unknown["level"] == "error"
    assert unknown["where"] == f"issues/fields.md:{SENDABLE.count(chr(10)) + 2}"
    assert unknown["message"].startswith("unknown merge field subscriber.plan; the fields are")


def test_the_public_archive_shows_the_defaults(project: Path) -> None:
    from test_web import Site, _start, _stop

    from mailer.state.ledger import Ledger
    from mailer.states import DeliveryState

    settings = config.load(project, environ={"MAILER_SECRET": SECRET})
    with Ledger(settings.state_path) as ledger:
        ledger.record("fields", "ann@example.com", DeliveryState.SENT)
    server, app, thread = _start(settings)
    try:
        site = Site(server.port, app, settings)
        page = site.get("/issues/fields")
        assert page.status == 200 and "Hi friend, from ." in page.text
        assert "Ann" not in page.text and "Oslo" not in page.text
        index = site.get("/").text
        assert "Hi friend, from ." in index and "subscriber." not in index
    finally:
        _stop(server, app, thread)
