"""The transports that talk to no server: the in-memory Outbox and the dry run.

Outbox is what the send-loop tests script their servers with (test_send.py, test_ratelimit.py);
here it is tested on its own, and once end to end under a real Sender.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import DEFERRED, FAILED, SENT

from mailer import config
from mailer.compose import issue as issue_mod
from mailer.compose import render as render_mod
from mailer.compose.render import Email
from mailer.deliver.message import Composer, Message
from mailer.deliver.sender import NullRecorder, Sender, SendOptions
from mailer.deliver.transports import DryRunTransport, MemoryTransport, Outbox, Result
from mailer.errors import EXIT_NOPERM, MailerError, SMTPAuthError, SMTPUnavailable
from mailer.state.subscribers import Subscriber


def message(to: str, body: bytes = b"hello") -> Message:
    return Message(to, f"<{to}.id@example.org>", b"Subject: x\r\n\r\n" + body + b"\r\n")


# -- Outbox and its MemoryTransport -------------------------------------------------------


def test_accepts_everything_by_default() -> None:
    outbox = Outbox()
    transport = outbox.transport()
    assert isinstance(transport, MemoryTransport) and transport.outbox is outbox
    transport.open()
    before = time.monotonic()
    results = [transport.send(message("ada@example.com")), transport.send(message("bob@x.org"))]
    after = time.monotonic()
    transport.close()
    assert results == [Result(SENT, 250, "250 accepted")] * 2
    assert not results[0].dropped and not results[0].throttled
    assert outbox.recipients == ["ada@example.com", "bob@x.org"]
    assert [m.data for m in outbox.messages] == [message("ada@example.com").data] * 2
    assert len(outbox.sent_at) == 2
    assert before <= outbox.sent_at[0] <= outbox.sent_at[1] <= after  # time.monotonic


def test_sent_at_reads_the_given_clock_at_each_send() -> None:
    ticks = iter([10.0, 12.5, 99.0])
    outbox = Outbox(clock=lambda: next(ticks))
    transport = outbox.transport()
    for to in ("a@example.com", "b@example.com"):
        transport.send(message(to))
    assert outbox.sent_at == [10.0, 12.5]
    assert list(zip(outbox.recipients, outbox.sent_at, strict=True)) == [
        ("a@example.com", 10.0),
        ("b@example.com", 12.5),
    ]


def test_scripted_replies_count_sends_across_connections() -> None:
    seen: list[tuple[Message, int]] = []

    def reply(msg: Message, n: int) -> Result:
        seen.append((msg, n))
        if n % 2:
            return Result(SENT, 250, f"250 ok #{n}")
        return Result(DEFERRED, 451, f"451 later #{n}")

    outbox = Outbox(reply=reply)
    first, second = outbox.transport(), outbox.transport()
    first.open()
    second.open()
    sent = [message(f"r{i}@example.com") for i in range(5)]
    results = [(first if i in (0, 3, 4) else second).send(m) for i, m in enumerate(sent)]
    first.close()
    second.close()
    assert [r.reply for r in results] == [
        "250 ok #1",
        "451 later #2",
        "250 ok #3",
        "451 later #4",
        "250 ok #5",
    ]
    assert [r.state for r in results] == [SENT, DEFERRED, SENT, DEFERRED, SENT]
    assert results[1].throttled
    # The reply is given the very message sent, already in the outbox at its place n.
    assert [n for _, n in seen] == [1, 2, 3, 4, 5]
    assert all(msg is m for (msg, _), m in zip(seen, sent, strict=True))
    assert all(outbox.messages[n - 1] is msg for msg, n in seen)


def test_refuse_open_raises_the_error_it_returns() -> None:
    refusal = SMTPUnavailable("cannot reach the SMTP server (open #2)", hint="is it up?")
    asked: list[int] = []

    def refuse_open(n: int) -> MailerError | None:
        asked.append(n)
        return refusal if n == 2 else None

    outbox = Outbox(refuse_open=refuse_open)
    outbox.transport().open()
    with pytest.raises(SMTPUnavailable) as info:
        outbox.transport().open()
    assert info.value is refusal and info.value.hint == "is it up?"
    outbox.transport().open()
    assert asked == [1, 2, 3]
    assert outbox.opens == 3  # a refused open counts too
    assert outbox.messages == []


def test_opens_and_closes_are_counted() -> None:
    outbox = Outbox()
    assert (outbox.opens, outbox.closes) == (0, 0)
    transports = [outbox.transport() for _ in range(3)]
    for transport in transports:
        transport.open()
    transports[0].close()
    assert (outbox.opens, outbox.closes) == (3, 1)
    transports[1].open()  # one transport reopened after a batch
    transports[1].close()
    transports[2].close()
    assert (outbox.opens, outbox.closes) == (4, 3)
    assert outbox.messages == []


def test_is_thread_safe() -> None:
    # 4 connections x 250 sends at once: nothing lost, every n handed out exactly once.
    outbox = Outbox(reply=lambda msg, n: Result(SENT, 250, str(n)))
    start = threading.Barrier(4)
    results: list[list[tuple[Message, Result]]] = [[] for _ in range(4)]

    def connection(k: int) -> None:
        transport = outbox.transport()
        transport.open()
        start.wait()
        for i in range(250):
            msg = message(f"t{k}-{i:03d}@example.com")
            results[k].append((msg, transport.send(msg)))
        transport.close()

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    try:
        threads = [threading.Thread(target=connection, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    assert len(outbox.messages) == 1000 and len(outbox.sent_at) == 1000
    assert len(set(outbox.recipients)) == 1000
    assert (outbox.opens, outbox.closes) == (4, 4)
    numbers = [int(result.reply) for mine in results for _, result in mine]
    assert sorted(numbers) == list(range(1, 1001))
    assert all(outbox.messages[int(r.reply) - 1] is m for mine in results for m, r in mine)
    # Each connection's own messages stay in its order.
    for k in range(4):
        mine = [to for to in outbox.recipients if to.startswith(f"t{k}-")]
        assert mine == [f"t{k}-{i:03d}@example.com" for i in range(250)]


# -- DryRunTransport ----------------------------------------------------------------------

DRY = Result(SENT, 250, "250 dry run")


def test_dry_run_keeps_the_first_few_as_numbered_files(tmp_path: Path) -> None:
    out = tmp_path / "eml"  # made on the first write
    dry = DryRunTransport(out, keep=3)
    dry.open()
    sent = [message(f"r{i}@example.com", f"body {i}".encode()) for i in range(5)]
    assert [dry.send(m) for m in sent] == [DRY] * 5
    dry.close()
    names = ["01-r0@example.com.eml", "02-r1@example.com.eml", "03-r2@example.com.eml"]
    assert sorted(p.name for p in out.iterdir()) == names
    assert dry.written == [out / name for name in names]
    assert [p.read_bytes() for p in dry.written] == [m.data for m in sent[:3]]


def test_dry_run_makes_an_address_safe_as_a_file_name(tmp_path: Path) -> None:
    # `/` is valid in an address; it must not become a folder or leave out_dir.
    out = tmp_path / "eml"
    dry = DryRunTransport(out, keep=5)
    for to in ("a/b@example.com", "../../up@example.com", "x+tag@example.com"):
        assert dry.send(message(to)) == DRY
    assert [p.name for p in dry.written] == [
        "01-a_b@example.com.eml",
        "02-.._.._up@example.com.eml",
        "03-x+tag@example.com.eml",
    ]
    assert all(p.parent == out and p.is_file() for p in dry.written)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        p.name for p in dry.written
    )


def test_dry_run_name_writes_that_one_file(tmp_path: Path) -> None:
    # The test copy: keep=1 and a fixed name, however many messages go through.
    dry = DryRunTransport(tmp_path, keep=1, name="test-copy.eml")
    sent = [message(f"r{i}@example.com", f"body {i}".encode()) for i in range(4)]
    assert [dry.send(m) for m in sent] == [DRY] * 4
    assert dry.written == [tmp_path / "test-copy.eml"]
    assert [p.name for p in tmp_path.iterdir()] == ["test-copy.eml"]
    assert (tmp_path / "test-copy.eml").read_bytes() == sent[0].data


@pytest.mark.parametrize("keep", [0, 1, 2, 7])
def test_dry_run_never_writes_more_than_keep(tmp_path: Path, keep: int) -> None:
    out = tmp_path / "eml"
    dry = DryRunTransport(out, keep=keep)
    for i in range(5):
        assert dry.send(message(f"r{i}@example.com")) == DRY
    assert len(dry.written) == min(keep, 5)
    files = list(out.iterdir()) if out.exists() else []
    assert len(files) == min(keep, 5)


def test_dry_run_without_a_folder_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    dry = DryRunTransport()
    assert dry.send(message("ada@example.com")) == DRY
    assert dry.written == [] and list(tmp_path.iterdir()) == []


# -- a Sender over an Outbox, end to end --------------------------------------------------


@pytest.fixture(scope="module")
def settings(module_project: Path) -> config.Settings:
    return config.load(module_project, environ={"MAILER_SECRET": "test-secret"})


@pytest.fixture(scope="module")
def email(module_project: Path, settings: config.Settings) -> Email:
    return render_mod.render(issue_mod.read(module_project / "issues" / "issue-2.md"), settings)


def people(n: int) -> list[Subscriber]:
    return [Subscriber(f"r{i:03d}@example.com", f"Reader {i}", {}, i + 2) for i in range(n)]


def sender_over(
    outbox: Outbox, email: Email, settings: config.Settings, **options: object
) -> tuple[Sender, NullRecorder]:
    recorder = NullRecorder()
    opts = SendOptions(**{"rate": float("inf"), "retry_delay": 0.01, **options})  # type: ignore[arg-type]
    return Sender(email, Composer(email, settings), outbox.transport, recorder, opts), recorder


def test_sender_gives_each_reader_one_copy(email: Email, settings: config.Settings) -> None:
    outbox = Outbox()
    subs = people(20)
    sender, recorder = sender_over(outbox, email, settings, connections=2, batch_size=4)
    summary = sender.run(subs, len(subs))
    assert (summary.sent, summary.failed, summary.deferred, summary.retries) == (20, 0, 0, 0)
    assert len(outbox.messages) == 20
    assert sorted(outbox.recipients) == [s.email for s in subs]
    assert len({m.message_id for m in outbox.messages}) == 20
    for m in outbox.messages:
        head = m.data.split(b"\r\n\r\n", 1)[0]
        assert f"<{m.recipient}>".encode() in head and b"Subject: " in head
    # Batches of 4 over two connections: ceil(n1/4) + ceil(n2/4) connections, all closed.
    assert 5 <= outbox.opens <= 6 and outbox.closes == outbox.opens
    assert recorder.replies == {s.email: (SENT, "250 accepted") for s in subs}


def test_sender_records_every_reply(email: Email, settings: config.Settings) -> None:
    # r001 is refused, r002 is deferred once, r003 every time; the rest are accepted.
    tries: Counter[str] = Counter()
    full = Result(DEFERRED, 452, "452 4.2.2 Mailbox full")

    def reply(msg: Message, n: int) -> Result:
        tries[msg.recipient] += 1
        if msg.recipient == "r001@example.com":
            return Result(FAILED, 550, "550 5.1.1 No such user")
        if msg.recipient == "r003@example.com" or (
            msg.recipient == "r002@example.com" and tries[msg.recipient] == 1
        ):
            return full
        return Result(SENT, 250, f"250 ok #{n}")

    outbox = Outbox(reply=reply)
    sender, recorder = sender_over(outbox, email, settings, max_attempts=3)
    summary = sender.run(people(5), 5)
    assert (summary.sent, summary.failed, summary.deferred, summary.retries) == (3, 1, 1, 3)
    assert len(outbox.messages) == 8
    assert Counter(outbox.recipients) == {
        "r000@example.com": 1,
        "r001@example.com": 1,
        "r002@example.com": 2,
        "r003@example.com": 3,
        "r004@example.com": 1,
    }
    assert tries == Counter(outbox.recipients)
    # NullRecorder keeps each reader's last reply, as the Outbox gave it.
    last = {to: n for n, to in enumerate(outbox.recipients, 1)}  # to -> n of its last send
    assert recorder.replies == {
        "r000@example.com": (SENT, f"250 ok #{last['r000@example.com']}"),
        "r001@example.com": (FAILED, "550 5.1.1 No such user"),
        "r002@example.com": (SENT, f"250 ok #{last['r002@example.com']}"),
        "r003@example.com": (DEFERRED, "452 4.2.2 Mailbox full"),
        "r004@example.com": (SENT, f"250 ok #{last['r004@example.com']}"),
    }
    assert (outbox.opens, outbox.closes) == (1, 1)


def test_sender_stops_before_anyone_when_the_first_open_is_refused(
    email: Email, settings: config.Settings
) -> None:
    refusal = SMTPAuthError("refused the login for 'news'")
    outbox = Outbox(refuse_open=lambda n: refusal)
    sender, recorder = sender_over(outbox, email, settings)
    with pytest.raises(SMTPAuthError) as info:
        sender.run(people(3), 3)
    assert info.value is refusal
    assert outbox.messages == [] and recorder.replies == {}
    assert (outbox.opens, outbox.closes) == (1, 0)


def test_sender_stops_when_a_send_raises(email: Email, settings: config.Settings) -> None:
    # A reply may raise: the server refusing us, not the reader, ends the run for everyone.
    def reply(msg: Message, n: int) -> Result:
        if n == 3:
            raise SMTPAuthError("relay denied")
        return Result(SENT, 250, "250 ok")

    outbox = Outbox(reply=reply)
    sender, recorder = sender_over(outbox, email, settings)
    summary = sender.run(people(5), 5)
    assert summary.error == "relay denied" and summary.exit_code == EXIT_NOPERM
    assert summary.sent == 2
    assert outbox.recipients == ["r000@example.com", "r001@example.com", "r002@example.com"]
    assert recorder.replies == {
        "r000@example.com": (SENT, "250 ok"),
        "r001@example.com": (SENT, "250 ok"),
    }
