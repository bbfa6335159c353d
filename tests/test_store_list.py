"""The list in the store (`subscribers = "store"`): the commands with their exact outputs and
exit codes, the whole flow (import, send to a real SMTP server, a one-click unsubscribe,
send again) on SQLite and PostgreSQL, segments, what bounces and complaints do to a
reader, the signup API the form will use, and erasure."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit
from urllib.request import Request, urlopen

import pytest
from click.testing import Result
from conftest import FIXTURES, SECRET, SENT, MailerCli, one_line_error, smtp_env
from smtp_server import SMTPServer
from test_imports import zipped

from mailer import config
from mailer.errors import EXIT_DATA, EXIT_USAGE
from mailer.state.ledger import FeedbackEvent, Ledger, open_ledger
from mailer.state.reader_rows import Forgotten, Wanted, forget_key
from mailer.states import Feedback, Reason, SubscriberStatus
from mailer.web import routes as web
from mailer.web import wsgi

CONFIRMED, PENDING = SubscriberStatus.CONFIRMED, SubscriberStatus.PENDING
NOW = "2026-05-04T09:30:00+00:00"
Run = Callable[..., Result]

pytestmark = pytest.mark.usefixtures("render_memo")


@pytest.fixture
def project(new_project: Callable[[str], Path]) -> Path:
    root = new_project("email,name\n")
    with (root / "mailer.toml").open("a") as toml:
        toml.write('subscribers = "store"\n')
    return root


@pytest.fixture
def runner(mailer_cli: MailerCli) -> Callable[[Path], Run]:
    """runner(project): a Run for `mailer -C project`, at NOW, against server (or a dead port)."""

    def bind(project: Path) -> Run:
        def run(*args: str, server: SMTPServer | None = None, env: dict | None = None) -> Result:
            full = smtp_env(server) if server else smtp_env(port=1)
            full.update({"MAILER_NOW": NOW, **(env or {})})
            return mailer_cli(project, *args, env=full)

        return run

    return bind


@pytest.fixture
def cli(project: Path, runner: Callable[[Path], Run]) -> Run:
    return runner(project)


def settings_of(project: Path) -> config.Settings:
    return config.load(project, environ={"MAILER_SECRET": SECRET})


def statuses(project: Path) -> dict[str, str]:
    with open_ledger(settings_of(project)) as book:
        return {r.email: r.status.value for r in book.readers()}


# -- the commands ---------------------------------------------------------------------------


def test_add_list_tag_remove(cli: Run, project: Path) -> None:
    added = cli("subscribers", "add", "Ada@Example.com", "--name", "Ada  Lovelace",
                "--field", "City=London", "--tag", "Paid")  # fmt: skip
    assert (added.exit_code, added.stdout) == (
        0,
        "Ada@example.com: added (confirmed, tags: paid)\n",
    )
    again = cli("subscribers", "add", "ada@example.com", "--tag", "vip")
    assert again.stdout == "Ada@example.com: changed (confirmed, tags: paid, vip)\n"
    same = cli("subscribers", "add", "ada@example.com", "--tag", "vip")
    assert same.stdout == "Ada@example.com: unchanged (confirmed, tags: paid, vip)\n"
    assert cli("subscribers", "add", "bob@example.org").exit_code == 0

    listed = cli("subscribers", "list")
    assert listed.exit_code == 0
    assert listed.stdout == (
        "Ada@example.com  confirmed  paid, vip  Ada Lovelace\nbob@example.org  confirmed  -  \n"
    )
    assert listed.stderr == "2 readers\n"
    as_csv = cli("subscribers", "list", "--csv", "--tag", "vip")
    assert as_csv.stdout == (
        "email,name,status,tags,fields,created,confirmed,source\n"
        'Ada@example.com,Ada Lovelace,confirmed,"paid,vip","{""city"": ""London""}",'
        "2026-05-04T09:30:00+00:00,2026-05-04T09:30:00+00:00,cli\n"
    )

    tagged = cli("subscribers", "tag", "ada@example.com", "bob@example.org",
                 "--add", "editors", "--remove", "paid")  # fmt: skip
    assert tagged.stdout == "Ada@example.com: tags editors, vip\nbob@example.org: tags editors\n"
    missing = cli("subscribers", "tag", "bob@example.org", "nobody@example.com", "--add", "x")
    assert missing.exit_code == EXIT_DATA
    assert one_line_error(missing) == (
        "Error: not on the list: nobody@example.com (nothing was changed)"
    )
    assert cli("subscribers", "list").stdout == (
        "Ada@example.com  confirmed  editors, vip  Ada Lovelace\n"
        "bob@example.org  confirmed  editors  \n"
    )

    removed = cli("subscribers", "remove", "BOB@example.org")
    assert removed.stdout == "BOB@example.org: unsubscribed and suppressed (manual)\n"
    assert cli("subscribers", "remove", "bob@example.org").stdout == (
        "bob@example.org: was already suppressed\n"
    )
    assert cli("subscribers", "remove", "carol@example.net").stdout == (
        "carol@example.net: suppressed (manual); it was not on the list\n"
    )
    assert cli("subscribers", "list", "--status", "unsubscribed").stdout == (
        "bob@example.org  unsubscribed  editors  \n"
    )
    back = cli("subscribers", "add", "bob@example.org")
    assert back.exit_code == EXIT_DATA
    assert one_line_error(back) == "Error: bob@example.org: not added: suppressed (manual)"
    assert cli("subscribers", "check").stdout == (
        "the store: 0 pending, 1 confirmed, 1 unsubscribed, 0 bounced, 0 complained\n"
    )
    assert cli("suppressed", "--csv").stdout.splitlines()[1:] == [
        "bob@example.org,manual,cli,2026-05-04T09:30:00+00:00",
        "carol@example.net,manual,cli,2026-05-04T09:30:00+00:00",
    ]


def test_the_commands_refuse_bad_input_in_one_line(cli: Run) -> None:
    bad = cli("subscribers", "add", "not-an-address")
    assert bad.exit_code == EXIT_USAGE
    assert one_line_error(bad) == (
        "Error: Invalid value for EMAIL: An email address must have an @-sign."
    )
    field = cli("subscribers", "add", "a@example.com", "--field", "city")
    assert field.exit_code == EXIT_USAGE
    assert one_line_error(field) == "Error: Invalid value for --field: 'city' is not KEY=VALUE"
    reserved = cli("subscribers", "add", "a@example.com", "--field", "name=Ann")
    assert one_line_error(reserved) == (
        "Error: Invalid value for --field: 'name' is not a field: use --name"
    )
    nothing = cli("subscribers", "tag", "a@example.com")
    assert nothing.exit_code == EXIT_USAGE
    assert one_line_error(nothing) == "Error: say what to do: --add TAG, --remove TAG or both"
    status = cli("subscribers", "list", "--status", "gone")
    assert status.exit_code == EXIT_USAGE


def test_the_store_commands_say_when_sends_read_a_csv(cli: Run) -> None:
    result = cli("subscribers", "add", "a@example.com", env={"MAILER_SUBSCRIBERS": "list.csv"})
    assert result.exit_code == 0
    assert result.stderr == (
        "warning: subscribers = 'list.csv': sends read that file, not the store"
        ' (set subscribers = "store" in mailer.toml to send to this list)\n'
    )


def test_export_of_the_store_leaves_out_who_may_not_be_mailed(cli: Run, project: Path) -> None:
    cli("subscribers", "add", "ada@example.com", "--name", "Ada", "--field", "city=London")
    cli("subscribers", "add", "bob@example.org", "--name", "Bob")
    cli("subscribers", "add", "eve@example.net", "--field", "zip=1234")
    cli("unsubscribe", "bob@example.org")
    with open_ledger(settings_of(project)) as book:
        book.signup(Wanted("pen@example.com", PENDING, "form", "Pen"))
    result = cli("subscribers", "export")
    assert result.exit_code == 0
    assert result.stdout == (
        "email,name,city,zip\nada@example.com,Ada,London,\neve@example.net,,,1234\n"
    )
    assert result.stderr == "2 exported, 0 rows left out, 1 suppressed addresses\n"


# -- the whole flow -------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def flow_project(project: Path, request: pytest.FixtureRequest) -> Path:
    if request.param == "postgresql":
        url = request.getfixturevalue("database_with_password")
        with (project / "mailer.toml").open("a") as toml:
            toml.write(f'database_url = "{url}"\n')
    return project


@pytest.fixture
def site(flow_project: Path) -> Iterator[int]:
    """The web app (one-click unsubscribe) on 127.0.0.1, sharing the project's store."""
    app = web.make_app(settings_of(flow_project))
    server = wsgi.Server(app, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server.port
    finally:
        server.stop()
        thread.join(5)
        server.close()
        getattr(app, "close", lambda: None)()


def one_click(port: int, link: str) -> int:
    """POST what a mail client posts for the List-Unsubscribe link (RFC 8058)."""
    token = parse_qs(urlsplit(link).query)["token"][0]
    request = Request(
        f"http://127.0.0.1:{port}/unsubscribe?token={quote(token)}",
        data=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with urlopen(request, timeout=10) as reply:
        return int(reply.status)


def test_import_send_unsubscribe_send_again(
    flow_project: Path,
    site: int,
    smtp_server: SMTPServer,
    tmp_path: Path,
    runner: Callable[[Path], Run],
) -> None:
    project, cli = flow_project, runner(flow_project)
    export = zipped(FIXTURES / "imports" / "mailchimp", tmp_path / "members_export_1.zip")
    assert cli("subscribers", "import", export).exit_code == 0
    with open_ledger(settings_of(project)) as book:  # a signup, not yet confirmed
        book.signup(Wanted("new.reader@example.com", PENDING, "form", "New",
                           form_url="https://newsletter.example.org/join"))  # fmt: skip
    first = cli("send", "issue-2", "--yes", "--rate", "off", server=smtp_server)
    assert first.exit_code == 0, first.output
    confirmed = [
        "ada.lovelace@example.com",
        "alan.turing@example.org",
        "grace.hopper@example.net",
        "zoe.martin@example.com",
    ]
    assert smtp_server.by_recipient() == dict.fromkeys(confirmed, 1)  # never pending, suppressed
    assert "issue-2: sent 4, deferred 0, failed 0" in first.stdout

    [grace] = [m for m in smtp_server.received if m.rcpt_tos == ["grace.hopper@example.net"]]
    link = grace.message()["List-Unsubscribe"].split(",")[0].strip().strip("<>")
    assert one_click(site, link) == 200
    assert statuses(project)["grace.hopper@example.net"] == "unsubscribed"

    again = cli("send", "issue-2", "--yes", "--rate", "off", server=smtp_server)
    assert again.exit_code == 0, again.output
    assert len(smtp_server.received) == 4  # nobody: everyone had it
    assert "issue-2: sent 0, deferred 0, failed 0" in again.stdout

    with open_ledger(settings_of(project)) as book:
        assert book.confirm("new.reader@example.com") is not None
    (project / "issues" / "issue-3.md").write_bytes(
        (project / "issues" / "issue-2.md").read_bytes()
    )
    third = cli("send", "issue-3", "--yes", "--rate", "off", server=smtp_server)
    assert third.exit_code == 0, third.output
    got = [r for m in smtp_server.received[4:] for r in m.rcpt_tos]
    expected = [a for a in confirmed if a != "grace.hopper@example.net"]
    assert sorted(got) == sorted([*expected, "new.reader@example.com"])
    status = cli("status", "issue-3")
    assert "  sent       4\n" in status.stdout and "  pending    0\n" in status.stdout
    with open_ledger(settings_of(project)) as book:
        assert {d.email for d in book.deliveries("issue-3") if d.state == SENT} == set(got)


# -- segments -------------------------------------------------------------------------------


def segmented(project: Path, name: str, front_matter: str) -> None:
    source = (project / "issues" / "issue-2.md").read_text(encoding="utf-8")
    marker = "tags: [nlp_newsletter]\n"
    assert marker in source
    (project / "issues" / f"{name}.md").write_text(
        source.replace(marker, marker + front_matter), encoding="utf-8"
    )


def test_segments_by_flag_and_front_matter(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    cli("subscribers", "add", "a@example.com", "--tag", "paid")
    cli("subscribers", "add", "b@example.com", "--tag", "paid", "--tag", "vip")
    cli("subscribers", "add", "c@example.com")
    cli("subscribers", "add", "d@example.com", "--tag", "trial")
    dry = cli("send", "issue-2", "--dry-run", "--tag", "PAID", "--tag", "trial")
    assert dry.exit_code == 0, dry.output
    assert "  list         the store (tagged paid, trial)\n  rows read    3\n" in dry.stdout

    segmented(project, "paid-only", "segment: [paid]\n")
    sent = cli("send", "paid-only", "--yes", "--rate", "off", server=smtp_server)
    assert sent.exit_code == 0, sent.output
    assert smtp_server.by_recipient() == {"a@example.com": 1, "b@example.com": 1}
    status = cli("status", "paid-only")
    assert "  pending    0\n" in status.stdout  # the segment's: c and d are not owed it
    # b (vip) had it; d (trial) is owed it.
    assert "  pending    1\n" in cli("status", "paid-only", "--tag", "trial", "--tag", "vip").stdout

    # Jekyll's own `tags:` (issue-2 has tags: [nlp_newsletter]) is no segment.
    everyone = cli("send", "issue-2", "--yes", "--rate", "off", server=smtp_server)
    assert everyone.exit_code == 0, everyone.output
    assert len(smtp_server.received) == 2 + 4

    segmented(project, "bad-segment", "segment: {paid: true}\n")
    bad = cli("send", "bad-segment", "--dry-run")
    assert bad.exit_code == EXIT_DATA
    assert one_line_error(bad).endswith(
        "bad-segment.md: front matter key 'segment' must be a tag or a list of tags, like [paid]"
    )


def test_a_segment_of_a_csv_list_reads_its_tags_column(
    new_project: Callable[[str], Path],
    runner: Callable[[Path], Run],
) -> None:
    project = new_project('email,name,tags\na@example.com,A,"paid, vip"\nb@example.com,B,\n')
    cli = runner(project)
    dry = cli("send", "issue-2", "--dry-run", "--tag", "vip")
    assert "  list         subscribers.csv (tagged vip)\n" in dry.stdout
    assert "  recipients   1\n" in dry.stdout
    none = runner(new_project("email,name\na@example.com,A\n", "other"))
    refused = none("send", "issue-2", "--dry-run", "--tag", "vip")
    assert refused.exit_code == EXIT_DATA
    assert one_line_error(refused).endswith(
        "subscribers.csv: a segment needs tags, and this list has no 'tags' column"
    )


# -- what comes back, the signup API, erasure --------------------------------------------------


def test_bounces_and_complaints_set_the_readers_status(tmp_path: Path) -> None:
    with Ledger(tmp_path) as book:
        none = Forgotten("", ())
        wanted = [Wanted(f"{n}@example.com", CONFIRMED, "cli") for n in ("a", "b", "c", "d")]
        assert book.apply_readers(wanted, forgotten=none).added == 4
        book.record("issue-2", "a@example.com", SENT, "250 ok")
        hard = FeedbackEvent("a@example.com", Feedback.HARD, "issue-2", "5.1.1", "no such user")
        book.record_feedback("<b1@mx>", Feedback.HARD, [hard], source="t", soft_limit=3)
        spam = FeedbackEvent("b@example.com", Feedback.COMPLAINT, "issue-2", "abuse")
        book.record_feedback("<c1@mx>", Feedback.COMPLAINT, [spam], source="t", soft_limit=3)
        book.suppress("c@example.com", Reason.UNSUBSCRIBED, "one-click")
        # A later reason does not rewrite the first: the suppression keeps it, so does the row.
        book.suppress("b@example.com", Reason.UNSUBSCRIBED, "web")
        assert {r.email: r.status.value for r in book.readers()} == {
            "a@example.com": "bounced",
            "b@example.com": "complained",
            "c@example.com": "unsubscribed",
            "d@example.com": "confirmed",
        }
        assert book.count_readers(CONFIRMED) == 1


def test_signup_and_confirm_for_the_form(tmp_path: Path) -> None:
    with Ledger(tmp_path) as book:
        form = "https://newsletter.example.org/join"
        pending = book.signup(Wanted("Pat@Example.com", PENDING, "form", "Pat", form_url=form))
        assert (pending.status, pending.consent.source, pending.consent.form_url) == (
            PENDING,
            "form",
            form,
        )
        assert pending.consent.confirmed_at is None
        assert book.confirmed_page((), "") == []  # a pending reader is never sent anything
        confirmed = book.confirm("pat@example.com")
        assert confirmed is not None and confirmed.status is CONFIRMED
        assert confirmed.consent.confirmed_at is not None
        assert book.confirm("nobody@example.com") is None

        # One who left may sign up again; only their confirmation lifts the suppression.
        book.remove_reader("pat@example.com")
        again = book.signup(Wanted("pat@example.com", PENDING, "form", form_url=form + "?2"))
        assert again.status is PENDING and again.consent.form_url == form + "?2"
        assert book.is_suppressed("pat@example.com")
        assert book.confirm("pat@example.com") is not None
        assert not book.is_suppressed("pat@example.com")

        # So may one who was forgotten: the keyed hash goes with the confirmation.
        key = forget_key(SECRET, "pat@example.com")
        book.forget("pat@example.com", key)
        assert book.reader("pat@example.com") is None and book.is_suppressed(key)
        book.signup(Wanted("pat@example.com", PENDING, "form"))
        assert book.confirm("pat@example.com", key) is not None
        assert not book.is_suppressed(key)


def test_forget_erases_everywhere_and_a_csv_send_skips_the_address(
    new_project: Callable[[str], Path],
    runner: Callable[[Path], Run],
) -> None:
    project = new_project("email,name\nada@example.com,Ada\nbob@example.com,Bob\n")
    cli = runner(project)
    with Ledger(project / ".mailer") as book:
        book.record("issue-1", "ada@example.com", SENT, "250 ok")
        book.suppress("ada@example.com", Reason.UNSUBSCRIBED, "web")
    forgot = cli("subscribers", "forget", "ada@example.com")
    assert forgot.exit_code == 0, forgot.output
    assert forgot.stdout == (
        "ada@example.com: forgotten (1 from deliveries, 1 from suppressions);"
        " a keyed hash stays suppressed\n"
    )
    with Ledger(project / ".mailer") as book:
        assert list(book.deliveries("issue-1")) == []
        [only] = book.suppressions()
    assert only.email == forget_key(SECRET, "ada@example.com") and only.source == "forget"
    # The CSV still names her: the hash keeps her from every send all the same.
    dry = cli("send", "issue-2", "--dry-run")
    assert "  recipients   1\n  suppressed   1\n" in dry.stdout


def test_forget_needs_the_secret(cli: Run) -> None:
    result = cli("subscribers", "forget", "ada@example.com", env={"MAILER_SECRET": ""})
    assert result.exit_code == EXIT_USAGE
    assert one_line_error(result) == (
        "Error: forget needs MAILER_SECRET: the hash left in the address's place is keyed with it"
    )


def test_list_shows_a_name_with_a_terminal_escape_escaped(cli: Run) -> None:
    assert cli("subscribers", "add", "eve@example.com", "--name", "Eve\x1b[2J").exit_code == 0
    assert cli("subscribers", "list").stdout == "eve@example.com  confirmed  -  Eve\\x1b[2J\n"
