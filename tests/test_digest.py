"""`mailer digest`: feeds shaped like real newsletters' (tests/fixtures/feeds), fetched over
real HTTP from a server on 127.0.0.1 that answers conditional GETs with 304."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from conftest import FIXTURES, MailerCli, one_line_error

from mailer.cli import main
from mailer.intake import fetch as fetch_mod

FEEDS = FIXTURES / "feeds"
NOW = "2024-03-12T06:00:00+00:00"
RSS_ITEM = """    <item>
      <title>#43: Evaluation, again</title>
      <description><![CDATA[<p>See <a href="/p/43">the post</a>.</p>]]></description>
      <link>https://parse.example.com/p/43-evaluation-again</link>
      <guid isPermaLink="false">https://parse.example.com/p/43-evaluation-again</guid>
      <pubDate>Tue, 12 Mar 2024 09:00:00 -0500</pubDate>
    </item>
"""


@dataclass
class FeedServer:
    """Serves named bodies; answers If-None-Match with 304 when the ETag still matches."""

    bodies: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    seen: list[tuple[str, str, int]] = field(default_factory=list)  # path, If-None-Match, status
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, fixture: str, kind: str = "application/rss+xml") -> str:
        self.bodies[path] = ((FEEDS / fixture).read_bytes(), kind)
        return self.url(path)


def _handler(state: FeedServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._answer(self.headers.get("If-None-Match", ""))

        def _status(self, code: int) -> None:
            # Noted before the answer goes out: the client may be done the moment it arrives.
            state.seen.append((self.path, self.headers.get("If-None-Match", ""), code))
            self.send_response(code)

        def _answer(self, asked: str) -> int:
            if self.path.startswith("/hop/"):  # /hop/N redirects N times, then the RSS feed
                left = int(self.path.rsplit("/", 1)[1])
                self._status(302)
                self.send_header("Location", f"/hop/{left - 1}" if left > 1 else "/rss")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return 302
            if self.path == "/huge":
                self._status(200)
                self.send_header("Content-Length", str(fetch_mod.MAX_BYTES + 1))
                self.end_headers()
                return 200
            if self.path not in state.bodies:
                state.seen.append((self.path, asked, 404))
                self.send_error(404)
                return 404
            body, kind = state.bodies[self.path]
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            if asked == etag:
                self._status(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return 304
            self._status(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag)
            self.end_headers()
            self.wfile.write(body)
            return 200

    return Handler


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    state = FeedServer()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def project(empty_project: Path) -> Path:
    return empty_project


Digest = Callable[..., Result]


@pytest.fixture
def digest(mailer_cli: MailerCli) -> Digest:
    """digest(root, *args): `mailer -C root digest ARGS` at NOW."""
    return lambda root, *args: mailer_cli(root, "digest", *args, env={"MAILER_NOW": NOW})


def _issues(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "issues").glob("*.md"))


def _split(path: Path) -> tuple[dict[str, object], str]:
    _, front, body = path.read_text(encoding="utf-8").split("---\n", 2)
    return yaml.safe_load(front), body


def test_rss_digest_lists_each_entry_once_and_an_unchanged_feed_costs_a_304(
    project: Path, feeds: FeedServer, digest: Digest
) -> None:
    url = feeds.serve("/rss", "rss-newsletter.xml")
    first = digest(project, url)
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[0] == "wrote issues/digest-2024-03-12.md: 3 new entries"
    meta, body = _split(project / "issues" / "digest-2024-03-12.md")
    assert meta == {
        "title": "The Weekly Parse: new posts, 2024-03-12",
        "preheader": "#42: Small models, big contexts, #41: Tokens & where they go and 1 more",
        "date": "2024-03-12T06:00:00+00:00",
        "digest": url,
        "lang": "en",
    }
    # Newest first, each with its date: an RFC 822 date with a named zone, one without
    # seconds, one that is a bare ISO date.
    assert [line for line in body.splitlines() if line.startswith(("## ", "*2"))] == [
        "## [#42: Small models, big contexts](https://parse.example.com/p/42-small-models-big-contexts)",
        "*2024-03-05*",
        "## [#41: Tokens & where they go](https://parse.example.com/p/41-tokens)",
        "*2024-02-28*",
        "## [#40: A reading list](https://parse.example.com/p/40-reading-list)",
        "*2024-02-20*",
    ]
    # CDATA read as HTML and cleaned to Markdown; relative links made absolute on the site.
    assert "a tool to **count** your tokens." in body
    assert "How [tokenizers](https://parse.example.com/p/tokenizer-tour) split your words." in body
    assert "![#41: Tokens & where they go](https://parse.example.com/img/41.png)" in body
    assert (
        "![#42: Small models, big contexts](https://substackcdn.example.com/image/42.jpeg)" in body
    )
    assert "![#40: A reading list](https://parse.example.com/img/40-thumb.jpg)" in body
    assert "<" not in body and "127.0.0.1" not in body

    built = CliRunner().invoke(main, ["-C", str(project), "build", "digest-2024-03-12"])
    assert built.exit_code == 0, built.output
    assert "warning" not in built.output.lower()

    again = digest(project, url)
    assert again.exit_code == 0
    assert again.output == f"nothing new: {url} has not changed since the last digest\n"
    assert feeds.seen[-1][1] != "" and feeds.seen[-1][2] == 304  # a conditional GET, answered
    assert _issues(project) == ["digest-2024-03-12.md"]

    body, kind = feeds.bodies["/rss"]
    feeds.bodies["/rss"] = (body.replace(b"    <item>", RSS_ITEM.encode() + b"    <item>", 1), kind)
    third = digest(project, url, "--title", "Parse, week 11")
    assert third.exit_code == 0, third.output
    assert third.output.splitlines()[0] == "wrote issues/digest-2024-03-12-2.md: 1 new entry"
    meta, body = _split(project / "issues" / "digest-2024-03-12-2.md")
    assert meta["title"] == "Parse, week 11"
    assert body.count("## [") == 1 and "#43: Evaluation, again" in body
    assert "[the post](https://parse.example.com/p/43)" in body


def test_atom_digest_with_max_send_at_and_no_warning(
    project: Path, feeds: FeedServer, digest: Digest
) -> None:
    url = feeds.serve("/atom", "atom-newsletter.xml", "application/atom+xml")
    result = digest(project, url, "--max", "2", "--send-at", "2024-03-12 09:00 Europe/Berlin")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [
        "wrote issues/digest-2024-03-12.md: 2 new entries",
        "  1 older new entries left out (--max 2)",
    ]
    meta, body = _split(project / "issues" / "digest-2024-03-12.md")
    assert meta["send_at"] == "2024-03-12 09:00 Europe/Berlin" and meta["digest"] == url
    headings = [line for line in body.splitlines() if line.startswith("## ")]
    assert headings == [
        "## [Tokenizers & the long tail](https://notes.example.org/posts/tokenizers-long-tail/)",
        "## [Evaluation without a leaderboard](https://notes.example.org/posts/evaluation/)",
    ]
    assert "*2024-03-08*" in body and "*2024-03-01*" in body  # fractional seconds; "t" and "z"
    assert "[forty languages](https://notes.example.org/data/counts.csv)" in body
    assert (
        "![Tokens per word, by language]"
        "(https://notes.example.org/content/images/2024/03/tokens.png)" in body
    )
    assert "**What we found**" in body  # a heading inside a summary is bold text, not a heading
    assert "alert" not in body and "script" not in body
    built = CliRunner().invoke(main, ["-C", str(project), "build", "digest-2024-03-12"])
    assert built.exit_code == 0 and "warning" not in built.output.lower(), built.output

    # The entry left out by --max is not kept for later: the next digest has nothing new.
    body_bytes, kind = feeds.bodies["/atom"]
    feeds.bodies["/atom"] = (body_bytes + b"\n", kind)  # a new ETag, the same entries
    again = digest(project, url)
    assert again.exit_code == 0
    assert again.output == "nothing new in Field Notes since the last digest\n"
    assert _issues(project) == ["digest-2024-03-12.md"]


def test_the_project_template_overrides_the_built_in_one(
    project: Path, feeds: FeedServer, digest: Digest
) -> None:
    (project / "templates").mkdir()
    (project / "templates" / "digest.md.j2").write_text(
        "{% for e in entries %}- [{{ e.title | md }}]({{ e.link | url }})\n{% endfor %}",
        encoding="utf-8",
    )
    assert digest(project, feeds.serve("/rss", "rss-newsletter.xml")).exit_code == 0
    _, body = _split(project / "issues" / "digest-2024-03-12.md")
    assert body.strip().splitlines() == [
        "- [#42: Small models, big contexts](https://parse.example.com/p/42-small-models-big-contexts)",
        "- [#41: Tokens & where they go](https://parse.example.com/p/41-tokens)",
        "- [#40: A reading list](https://parse.example.com/p/40-reading-list)",
    ]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "path,code,message",
    [
        ("/broken", 65, "broken XML at line 10"),
        ("/page", 65, "not an RSS or Atom feed (it is an HTML page)"),
        ("/missing", 65, "HTTP 404"),
        (
            f"/hop/{fetch_mod.MAX_REDIRECTS + 1}",
            65,
            f"more than {fetch_mod.MAX_REDIRECTS} redirects",
        ),
        ("/huge", 65, f"more than the {fetch_mod.MAX_BYTES} a feed may be"),
        ("closed", 69, "connection refused"),
    ],
)
def test_what_goes_wrong_is_one_line_and_writes_nothing(
    project: Path, feeds: FeedServer, path: str, code: int, message: str, digest: Digest
) -> None:
    feeds.serve("/broken", "broken.xml")
    feeds.serve("/page", "not-a-feed.html", "text/html; charset=utf-8")
    url = f"http://127.0.0.1:{_closed_port()}/feed" if path == "closed" else feeds.url(path)
    result = digest(project, url)
    assert result.exit_code == code, result.output
    assert message in one_line_error(result)
    assert _issues(project) == []


def test_redirects_within_the_limit_are_followed(
    project: Path, feeds: FeedServer, digest: Digest
) -> None:
    feeds.serve("/rss", "rss-newsletter.xml")
    result = digest(project, feeds.url(f"/hop/{fetch_mod.MAX_REDIRECTS}"))
    assert result.exit_code == 0, result.output
    assert [s for _, _, s in feeds.seen] == [302] * fetch_mod.MAX_REDIRECTS + [200]


def test_a_server_that_never_answers_is_unavailable() -> None:
    with socket.socket() as listening:  # accepts connections (the backlog), answers nothing
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        url = f"http://127.0.0.1:{listening.getsockname()[1]}/feed"
        with pytest.raises(fetch_mod.FeedUnavailable, match="no answer within 0.5 s") as caught:
            fetch_mod.fetch(url, timeout=0.5)
    assert caught.value.exit_code == 69


@pytest.mark.parametrize(
    "args,message",
    [
        (["ftp://example.org/feed"], "is not an http(s) URL"),
        (["https://example.org/feed", "--send-at", "tomorrow"], "Invalid value for --send-at"),
        (
            ["https://example.org/feed", "--max", "0"],
            "--max must be a whole number from 1 to 1000, got '0'",
        ),
    ],
)
def test_bad_input_is_one_line(
    project: Path, args: list[str], message: str, digest: Digest
) -> None:
    result = digest(project, *args)
    assert result.exit_code in (2, 65), result.output
    assert message in one_line_error(result)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_ledger_keeps_feeds_and_first_sends(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    from datetime import datetime

    from mailer.state.ledger import Ledger
    from mailer.states import DeliveryState

    url = "" if backend == "sqlite" else str(request.getfixturevalue("database_with_password"))
    feed = "https://parse.example.com/feed"
    with Ledger(tmp_path / "state", database_url=url) as ledger:
        for when, issue, email, state in (
            ("2024-03-01T09:00:00+00:00", "issue-1", "ann@example.com", DeliveryState.SENT),
            ("2024-03-01T09:05:00+00:00", "issue-1", "bob@example.com", DeliveryState.SENT),
            ("2024-03-02T09:00:00+00:00", "issue-2", "ann@example.com", DeliveryState.FAILED),
            ("2024-03-03T09:00:00+00:00", "issue-3", "ann@example.com", DeliveryState.DEFERRED),
            ("2024-03-04T09:00:00+00:00", "issue-3", "bob@example.com", DeliveryState.SENT),
        ):
            monkeypatch.setenv("MAILER_NOW", when)
            ledger.record(issue, email, state)
        # issue-2 reached nobody; issue-3 went out when a server first accepted a copy.
        assert ledger.first_sends() == {
            "issue-1": datetime.fromisoformat("2024-03-01T09:00:00+00:00"),
            "issue-3": datetime.fromisoformat("2024-03-04T09:00:00+00:00"),
        }
        assert ledger.feed_state(feed) == ("", "", set())
        ledger.save_feed(feed, '"v1"', "Tue, 05 Mar 2024 14:02:11 GMT", "digest-1", ["a", "b"])
        ledger.save_feed(feed, '"v2"', "", "digest-2", ["b", "c"])
        assert ledger.feed_state(feed) == ('"v2"', "", {"a", "b", "c"})
        assert ledger.feed_state(feed + "/other") == ("", "", set())
