"""`mailer subscribers import`: other services' exports (tests/fixtures/imports/, real column
layouts, synthetic addresses) into the store's list, with exact outputs and exit codes."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import Result
from conftest import FIXTURES, SECRET, MailerCli, one_line_error

from mailer.errors import EXIT_DATA, EXIT_USAGE
from mailer.state.imports import run_import
from mailer.state.ledger import Ledger
from mailer.states import Reason, SubscriberStatus

IMPORTS = FIXTURES / "imports"
CONFIRMED, PENDING = SubscriberStatus.CONFIRMED, SubscriberStatus.PENDING
Run = Callable[..., Result]


def zipped(folder: Path, dest: Path) -> Path:
    """The folder's files as the service delivers them: one zip, members at the top."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    return dest


@pytest.fixture
def project(new_project: Callable[[str], Path]) -> Path:
    root = new_project("email,name\n")
    with (root / "mailer.toml").open("a") as toml:
        toml.write('subscribers = "store"\n')
    return root


@pytest.fixture
def cli(project: Path, mailer_cli: MailerCli) -> Run:
    return lambda *args: mailer_cli(project, *args, env={"MAILER_SECRET": SECRET})


def ledger(project: Path) -> Ledger:
    return Ledger(project / ".mailer")


def readers(project: Path) -> dict[str, tuple[str, str, tuple[str, ...], dict[str, str]]]:
    with ledger(project) as book:
        return {r.email: (r.status.value, r.name, r.tags, dict(r.fields)) for r in book.readers()}


def suppressed(project: Path) -> dict[str, tuple[Reason, str]]:
    with ledger(project) as book:
        return {s.email: (s.reason, s.source) for s in book.suppressions()}


# -- Mailchimp ----------------------------------------------------------------------------------


@pytest.fixture
def mailchimp(tmp_path: Path) -> Path:
    return zipped(IMPORTS / "mailchimp", tmp_path / "members_export_3f1c2a9b7d.zip")


def test_mailchimp_audience_export(cli: Run, project: Path, mailchimp: Path) -> None:
    result = cli("subscribers", "import", mailchimp)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "members_export_3f1c2a9b7d.zip:cleaned_members_export_3f1c2a9b7d.csv: mailchimp\n"
        "members_export_3f1c2a9b7d.zip:unsubscribed_members_export_3f1c2a9b7d.csv: mailchimp\n"
        "members_export_3f1c2a9b7d.zip:subscribed_members_export_3f1c2a9b7d.csv: mailchimp\n"
        "members_export_3f1c2a9b7d.zip (imported): 4 added, 0 changed, 3 suppressed,"
        " 0 skipped, 0 invalid, 0 unchanged\n"
    )
    assert readers(project) == {
        "ada.lovelace@example.com": (
            "confirmed",
            "Ada Lovelace",
            ("editors", "paid"),
            {"first_name": "Ada", "last_name": "Lovelace", "company": "Analytical Engines"},
        ),
        "alan.turing@example.org": (
            "confirmed",
            "Alan Turing",
            (),
            {"first_name": "Alan", "last_name": "Turing"},
        ),
        "grace.hopper@example.net": (
            "confirmed",
            "Grace Hopper",
            ("editors",),
            {"first_name": "Grace", "last_name": "Hopper", "company": "Navy"},
        ),
        "zoe.martin@example.com": (
            "confirmed",
            "Zoë Martin",
            (),
            {"first_name": "Zoë", "last_name": "Martin", "zip_code": "69001"},
        ),
    }
    source = "import:members_export_3f1c2a9b7d.zip"
    assert suppressed(project) == {
        "former.reader@example.com": (Reason.UNSUBSCRIBED, source),
        "left.early@example.org": (Reason.UNSUBSCRIBED, source),
        "gone.mailbox@example.net": (Reason.BOUNCED, source),
    }
    with ledger(project) as book:
        ada = book.reader("ada.lovelace@example.com")
    assert ada is not None
    # OPTIN_TIME and CONFIRM_TIME are the consent record.
    assert ada.consent.source == source
    assert ada.consent.signed_up_at == datetime(2023, 4, 21, 11, 16, 57, tzinfo=UTC)
    assert ada.consent.confirmed_at == datetime(2023, 4, 21, 11, 17, 30, tzinfo=UTC)


def test_a_second_import_of_the_same_file_changes_nothing(
    cli: Run, project: Path, mailchimp: Path
) -> None:
    assert cli("subscribers", "import", mailchimp).exit_code == 0
    with ledger(project) as book:
        before = list(book.readers()), book.suppressions()
    again = cli("subscribers", "import", mailchimp)
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[-1] == (
        "members_export_3f1c2a9b7d.zip (imported): 0 added, 0 changed, 0 suppressed,"
        " 0 skipped, 0 invalid, 7 unchanged"
    )
    with ledger(project) as book:
        assert (list(book.readers()), book.suppressions()) == before


def test_a_dry_run_says_what_would_change_and_writes_nothing(
    cli: Run, project: Path, mailchimp: Path
) -> None:
    dry = cli("subscribers", "import", mailchimp, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.splitlines()[-1] == (
        "members_export_3f1c2a9b7d.zip (dry run, nothing written): 4 added, 0 changed,"
        " 3 suppressed, 0 skipped, 0 invalid, 0 unchanged"
    )
    assert not (project / ".mailer").exists()  # not even an empty store
    assert cli("subscribers", "import", mailchimp).exit_code == 0
    cli("subscribers", "add", "alan.turing@example.org", "--tag", "vip")
    dry = cli("subscribers", "import", mailchimp, "--dry-run", "--tag", "mailchimp")
    assert dry.stdout.splitlines()[-1] == (
        "members_export_3f1c2a9b7d.zip (dry run, nothing written): 0 added, 4 changed,"
        " 0 suppressed, 0 skipped, 0 invalid, 3 unchanged"
    )
    assert all("mailchimp" not in tags for _, _, tags, _ in readers(project).values())


def test_a_suppressed_address_is_never_resubscribed_by_an_import(
    cli: Run, project: Path, mailchimp: Path
) -> None:
    assert cli("unsubscribe", "Alan.Turing@example.org").exit_code == 0
    result = cli("subscribers", "import", mailchimp)
    assert result.exit_code == 0, result.output
    assert (
        "  members_export_3f1c2a9b7d.zip:subscribed_members_export_3f1c2a9b7d.csv:3: skipped:"
        " alan.turing@example.org: suppressed (manual)\n" in result.stdout
    )
    assert result.stdout.endswith(
        ": 3 added, 0 changed, 3 suppressed, 1 skipped, 0 invalid, 0 unchanged\n"
    )
    assert "alan.turing@example.org" not in readers(project)


def test_an_address_both_unsubscribed_and_subscribed_stays_out(
    cli: Run, project: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    for path in (IMPORTS / "mailchimp").iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    subscribed = folder / "subscribed_members_export_3f1c2a9b7d.csv"
    header = subscribed.read_text(encoding="utf-8").splitlines()[0].split(",")
    row = [""] * len(header)  # the same reader, both subscribed and unsubscribed
    row[0], row[header.index("OPTIN_TIME")] = "FORMER.reader@example.com", "2018-02-12 10:54:27"
    with subscribed.open("a", encoding="utf-8") as f:
        f.write(",".join(row) + "\n")
    result = cli("subscribers", "import", zipped(folder, tmp_path / "both.zip"))
    assert result.exit_code == 0, result.output
    assert (
        "both.zip:subscribed_members_export_3f1c2a9b7d.csv:6: skipped: FORMER.reader@example.com:"
        " duplicate of both.zip:unsubscribed_members_export_3f1c2a9b7d.csv:2" in result.stdout
    )
    assert "former.reader@example.com" not in readers(project)


# -- Substack, listmonk, Buttondown -------------------------------------------------------------


def test_substack_export(cli: Run, project: Path, tmp_path: Path) -> None:
    export = zipped(IMPORTS / "substack", tmp_path / "nlp-newsletter-export.zip")
    result = cli("subscribers", "import", export)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "nlp-newsletter-export.zip:email_list.nlp-newsletter.csv: substack\n"
        "nlp-newsletter-export.zip:posts.csv: left out: not a list\n"
        "  nlp-newsletter-export.zip:email_list.nlp-newsletter.csv:6: skipped:"
        " 1a2b3c4d@deletion-request.substack.com: a deletion request at Substack\n"
        "nlp-newsletter-export.zip (imported): 3 added, 0 changed, 1 suppressed, 1 skipped,"
        " 0 invalid, 0 unchanged\n"
    )
    found = readers(project)
    assert {e: (s, tags) for e, (s, _, tags, _) in found.items()} == {
        "founder@example.com": ("confirmed", ("paid",)),
        "paid.reader@example.org": ("confirmed", ("paid",)),
        "reader.one@example.com": ("confirmed", ()),
    }
    assert found["paid.reader@example.org"][3] == {
        "expiry": "2026-12-01T00:00:00.000Z",
        "plan": "yearly",
        "first_payment_at": "2024-02-01T10:05:00.000Z",
    }
    assert suppressed(project) == {
        "quiet.reader@example.net": (Reason.UNSUBSCRIBED, "import:nlp-newsletter-export.zip")
    }


def test_listmonk_export_and_import_formats(cli: Run, project: Path) -> None:
    result = cli("subscribers", "import", IMPORTS / "listmonk-subscribers.csv")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "listmonk-subscribers.csv: listmonk\n"
        "  listmonk-subscribers.csv:4: skipped: paused@example.net: disabled in listmonk\n"
        "listmonk-subscribers.csv (imported): 1 added, 0 changed, 1 suppressed, 1 skipped,"
        " 0 invalid, 0 unchanged\n"
    )
    result = cli("subscribers", "import", IMPORTS / "listmonk-import.csv")
    assert result.stdout.splitlines() == [
        "listmonk-import.csv: listmonk",
        "listmonk-import.csv (imported): 2 added, 0 changed, 0 suppressed, 0 skipped,"
        " 0 invalid, 0 unchanged",
    ]
    found = readers(project)
    assert found["lin.wei@example.com"] == (
        "confirmed",
        "Lin Wei",
        (),
        {"city": "Lisbon", "plan": '{"tier": 2}'},
    )
    assert found["new.reader@example.com"][3] == {"city": "Bergen"}
    assert suppressed(project)["blocked@example.org"][0] == Reason.UNSUBSCRIBED
    with ledger(project) as book:
        lin = book.reader("lin.wei@example.com")
    assert lin is not None  # Go's time.String(), as listmonk writes created_at
    assert lin.consent.signed_up_at == datetime(2024, 1, 15, 10, 0, 0, 123456, tzinfo=UTC)


def test_buttondown_export(cli: Run, project: Path) -> None:
    result = cli("subscribers", "import", IMPORTS / "buttondown-subscribers.csv")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "buttondown-subscribers.csv: buttondown\n"
        "  buttondown-subscribers.csv:7: skipped: removed@example.net: removed in Buttondown\n"
        "buttondown-subscribers.csv (imported): 3 added, 0 changed, 2 suppressed, 1 skipped,"
        " 0 invalid, 0 unchanged\n"
    )
    found = readers(project)
    assert {e: (s, tags) for e, (s, _, tags, _) in found.items()} == {
        "premium.reader@example.org": ("confirmed", ("paid", "vip")),
        "regular.reader@example.com": ("confirmed", ()),
        "waiting@example.net": ("pending", ()),  # unactivated: never mailed until confirmed
    }
    assert found["regular.reader@example.com"][3] == {"city": "Oslo"}  # metadata; notes stay
    assert {e: r for e, (r, _) in suppressed(project).items()} == {
        "gone@example.com": Reason.UNSUBSCRIBED,
        "bounce@example.org": Reason.BOUNCED,
    }


# -- any CSV, and what goes wrong -------------------------------------------------------------


def test_every_bad_row_is_named_and_the_good_ones_come_in(cli: Run, project: Path) -> None:
    result = cli("subscribers", "import", IMPORTS / "hand-made.csv", "--tag", "Friends")
    assert result.exit_code == EXIT_DATA
    assert result.stdout == (
        "hand-made.csv: csv\n"
        "  hand-made.csv:5: skipped: ADA@example.com: duplicate of hand-made.csv:2\n"
        "  hand-made.csv:3: invalid: not-an-address: invalid address:"
        " An email address must have an @-sign.\n"
        "  hand-made.csv:4: invalid: -: missing address\n"
        "  hand-made.csv:7: invalid: odd@example.org: unknown status 'archived'\n"
        "  hand-made.csv:8: invalid: short@example.com: expected 5 columns, found 2\n"
        "hand-made.csv (imported): 1 added, 0 changed, 1 suppressed, 1 skipped, 4 invalid,"
        " 0 unchanged\n"
    )
    assert readers(project) == {
        "ada@example.com": (
            "confirmed",
            "Ada Lovelace",
            ("editors", "friends", "paid"),
            {"city": "London"},
        )
    }
    assert set(suppressed(project)) == {"quit@example.org"}


def test_the_format_can_be_named(cli: Run, project: Path, tmp_path: Path) -> None:
    csv_file = IMPORTS / "mailchimp" / "subscribed_members_export_3f1c2a9b7d.csv"
    wrong = cli("subscribers", "import", csv_file, "--format", "substack")
    assert wrong.exit_code == EXIT_DATA
    assert one_line_error(wrong).startswith(
        "Error: subscribed_members_export_3f1c2a9b7d.csv:1: not a substack export's header"
        " (no email column?); the header has 'Email Address', 'First Name',"
    )
    plain = cli("subscribers", "import", csv_file, "--format", "csv")
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.splitlines()[0] == "subscribed_members_export_3f1c2a9b7d.csv: csv"
    # As any CSV: the name from First and Last Name, every other column a field.
    assert readers(project)["alan.turing@example.org"][1:3] == ("Alan Turing", ())
    assert readers(project)["alan.turing@example.org"][3]["optin_time"] == "2018-02-12 10:54:27"


def test_a_file_no_format_knows_is_refused_as_today(
    cli: Run, project: Path, tmp_path: Path
) -> None:
    odd = tmp_path / "contacts.csv"
    odd.write_text("Address;Name\nada@example.com;Ada\n", encoding="utf-8")
    result = cli("subscribers", "import", odd)
    assert result.exit_code == EXIT_DATA
    assert one_line_error(result) == (
        "Error: contacts.csv:1: not an export this tool knows header (no email column?);"
        " the header has 'Address;Name'"
    )
    assert not (project / ".mailer" / "ledger.db").exists() or readers(project) == {}


@pytest.mark.parametrize(
    "content,message",
    [
        (
            b"email,name\nada@example.com,Ada\n\xff\xfe@example.com,Bad\n",
            "Error: broken.csv:3: not UTF-8 text",
        ),
        (
            b'email,name\nada@example.com,"Ada\nbob@example.com,Bob\n',
            "Error: broken.csv:2: cannot parse the CSV record starting here:"
            " unexpected end of data",
        ),
    ],
    ids=["not-utf8", "unclosed-quote"],
)
def test_a_broken_file_is_refused_before_anything_is_written(
    cli: Run, project: Path, tmp_path: Path, content: bytes, message: str
) -> None:
    broken = tmp_path / "broken.csv"
    broken.write_bytes(content)
    result = cli("subscribers", "import", broken)
    assert result.exit_code == EXIT_DATA
    assert one_line_error(result) == message
    assert not (project / ".mailer" / "ledger.db").exists() or readers(project) == {}


def test_import_refuses_a_missing_file_and_a_bad_tag(cli: Run, tmp_path: Path) -> None:
    missing = cli("subscribers", "import", tmp_path / "nope.zip")
    assert missing.exit_code == EXIT_DATA
    assert one_line_error(missing) == f"Error: {tmp_path / 'nope.zip'}: no such file"
    bad = cli("subscribers", "import", IMPORTS / "hand-made.csv", "--tag", "a,b")
    assert bad.exit_code == EXIT_USAGE
    assert "a tag cannot hold a comma" in bad.output


# -- forgotten addresses ------------------------------------------------------------------------


def test_a_forgotten_address_is_never_imported_again(
    cli: Run, project: Path, mailchimp: Path
) -> None:
    assert cli("subscribers", "import", mailchimp).exit_code == 0
    forgot = cli("subscribers", "forget", "Ada.Lovelace@Example.com")
    assert forgot.exit_code == 0, forgot.output
    assert forgot.stdout == (
        "Ada.Lovelace@example.com: forgotten (1 from subscribers); a keyed hash stays suppressed\n"
    )
    again = cli("subscribers", "import", mailchimp)
    assert (
        ":2: skipped: ada.lovelace@example.com: forgotten on request: never added again\n"
        in again.stdout
    )
    assert "ada.lovelace@example.com" not in readers(project)
    [key] = [e for e in suppressed(project) if e.startswith("hmac-sha256:")]
    assert "lovelace" not in key
    with ledger(project) as book:
        assert book.is_suppressed(key)


def test_progress_is_reported_after_every_batch(project: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    with big.open("w") as f:
        f.write("email\n")
        f.writelines(f"r{i}@example.com\n" for i in range(12))
    seen: list[tuple[int, int]] = []
    with ledger(project) as book:
        done = run_import(book, big, batch=5, on_progress=lambda r: seen.append((r.rows, r.total)))
    assert done.added == 12
    assert seen == [(5, 12), (10, 12), (12, 12)]
