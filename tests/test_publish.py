"""`mailer publish`: the static archive, its Atom feed read back with feedparser, the pages in
Chromium, and `mailer serve` answering with the same bytes."""

from __future__ import annotations

import functools
import http.client
import http.server
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import feedparser
import pytest
from click.testing import CliRunner, Result
from conftest import ROOT, SECRET, MailerCli, one_line_error

from mailer import config
from mailer.cli import main
from mailer.state.ledger import Ledger
from mailer.states import DeliveryState
from mailer.web import routes as web
from mailer.web import wsgi

pytestmark = pytest.mark.slow  # a whole `mailer` command, issue rendered, in every test

SITE = "https://newsletter.example.org/"  # mailer.toml's archive_url, without /issues
SENT_AT = "2024-05-01T10:00:00+00:00"
SUBSCRIBE = "https://forms.example.org/signup"


def _issue(root: Path, name: str, front: str, body: str = "Some text.") -> Path:
    path = root / "issues" / f"{name}.md"
    path.write_text(f"---\n{front}\n---\n\n{body}\n", encoding="utf-8")
    return path


@pytest.fixture
def project(empty_project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """issue-2 sent, issue-4 `published: true` with a date, and three that stay private."""
    root = empty_project
    shutil.copy(ROOT / "issues" / "issue-2.md", root / "issues")
    _issue(root, "issue-3", "title: A draft nobody said to publish")
    _issue(
        root,
        "issue-4",
        "title: From the old blog\npreheader: Before the newsletter\npublished: true\n"
        "date: 2019-12-01",
        "Read [the notes](/notes/a) and see ![a chart](img/chart.png).",
    )
    _issue(root, "issue-5", "title: Sent but withdrawn\npublished: false")
    _issue(root, "issue-6", "title: Still a draft\npublished: true\ndraft: true\ndate: 2020-01-01")
    _issue(
        root,
        "issue-7",
        "title: Scheduled\npublished: true\ndate: 2024-06-01\nsend_at: 2999-01-01T09:00:00Z",
    )
    monkeypatch.setenv("MAILER_NOW", SENT_AT)
    with Ledger(root / ".mailer") as ledger:
        for issue in ("issue-2", "issue-5"):
            ledger.record(issue, "ann@example.com", DeliveryState.SENT)
        ledger.record("issue-3", "bob@example.com", DeliveryState.FAILED)  # never accepted
    monkeypatch.delenv("MAILER_NOW")
    return root


Publish = Callable[..., Result]


@pytest.fixture
def publish(mailer_cli: MailerCli) -> Publish:
    """publish(root, *args): `mailer -C root publish ARGS` with a subscribe URL set."""
    env = {"MAILER_SUBSCRIBE_URL": SUBSCRIBE}
    return lambda root, *args: mailer_cli(root, "publish", *args, env=env)


def _files(site: Path) -> dict[str, int]:
    """Every file of the site and its modification time (ns)."""
    return {str(p.relative_to(site)): p.stat().st_mtime_ns for p in site.rglob("*") if p.is_file()}


def test_publish_writes_the_public_issues_and_a_feed_that_reads_back(
    project: Path, publish: Publish
) -> None:
    result = publish(project)
    assert result.exit_code == 0, result.output
    site = project / "site"
    assert sorted(_files(site)) == [
        "feed.xml",
        "index.html",
        "issues/issue-2/index.html",
        "issues/issue-4/index.html",
        "sitemap.xml",
    ]
    assert result.output.splitlines()[-1].startswith(
        f"published 2 issues to site/ for {SITE}: 5 written, 0 unchanged, 0 removed, 2 rendered"
    )

    index = (site / "index.html").read_text(encoding="utf-8")
    assert index.index("issues/issue-2/") < index.index("issues/issue-4/")  # newest first
    assert '<time datetime="2024-05-01T10:00:00+00:00">2024-05-01</time>' in index
    assert '<time datetime="2019-12-01T00:00:00+00:00">2019-12-01</time>' in index
    assert "Before the newsletter" in index  # the preheader
    for private in ("issue-3", "issue-5", "issue-6", "issue-7", "draft", "withdrawn", "Sched"):
        assert private not in index
    assert f'action="{SUBSCRIBE}"' in index
    assert re.search(r'<input type="email" name="email" required', index)
    assert 'name="name"' in index and 'name="website"' in index

    page = (site / "issues/issue-2/index.html").read_text(encoding="utf-8")
    assert "NLP Newsletter #2" in page
    for leak in ("%%mailer:", "token=", "/unsubscribe", ">Unsubscribe<", "reader@example.org"):
        assert leak not in page, leak
    assert f'<link rel="canonical" href="{SITE}issues/issue-2/">' in page
    assert "View this email in your browser" not in page  # it is the browser's page already

    feed = feedparser.parse((site / "feed.xml").read_bytes())
    assert feed.version == "atom10" and not feed.bozo
    assert feed.feed.title == "NLP Newsletter" and feed.feed.id == SITE
    assert [e.id for e in feed.entries] == [f"{SITE}issues/issue-2/", f"{SITE}issues/issue-4/"]
    assert [e.link for e in feed.entries] == [e.id for e in feed.entries]
    assert feed.entries[0].published == SENT_AT and feed.entries[0].updated == SENT_AT
    assert feed.entries[1].published == "2019-12-01T00:00:00+00:00"
    old = feed.entries[1]
    assert old.summary == "Before the newsletter"
    content = old.content[0].value
    assert f'href="{SITE}notes/a"' in content
    assert f'src="{SITE}issues/issue-4/img/chart.png"' in content
    urls = re.findall(r'(?:href|src)="([^"]+)"', feed.entries[0].content[0].value)
    assert len(urls) > 20 and all(u.startswith(("https://", "http://")) for u in urls)

    sitemap = (site / "sitemap.xml").read_text(encoding="utf-8")
    assert re.findall(r"<loc>([^<]+)</loc>", sitemap) == [
        SITE,
        f"{SITE}issues/issue-2/",
        f"{SITE}issues/issue-4/",
    ]


def test_a_second_publish_writes_nothing_and_one_change_rebuilds_one_page(
    project: Path, publish: Publish
) -> None:
    assert publish(project).exit_code == 0
    site = project / "site"
    before = _files(site)
    again = publish(project)
    assert again.exit_code == 0
    assert again.output.splitlines() == [
        f"published 2 issues to site/ for {SITE}: 0 written, 5 unchanged, 0 removed,"
        f" 0 rendered in {again.output.split(' rendered in ')[1].strip()}"
    ]
    assert _files(site) == before

    issue = project / "issues" / "issue-4.md"
    issue.write_text(issue.read_text(encoding="utf-8").replace("old blog", "old diary"), "utf-8")
    changed = publish(project)
    assert changed.exit_code == 0, changed.output
    wrote = [line.split()[1] for line in changed.output.splitlines() if line.startswith("wrote")]
    assert wrote == ["site/issues/issue-4/index.html", "site/index.html", "site/feed.xml"]
    assert "1 rendered" in changed.output
    after = _files(site)
    assert {k for k in after if after[k] != before[k]} == {
        "issues/issue-4/index.html",
        "index.html",
        "feed.xml",
    }

    text = issue.read_text(encoding="utf-8").replace("published: true", "published: false")
    issue.write_text(text, encoding="utf-8")
    withdrawn = publish(project)
    assert "removed site/issues/issue-4/index.html" in withdrawn.output
    assert not (site / "issues" / "issue-4").exists()


def test_assets_are_copied_and_only_what_publish_wrote_is_removed(
    project: Path, publish: Publish
) -> None:
    (project / "assets" / "img").mkdir(parents=True)
    (project / "assets" / "img" / "logo.png").write_bytes(b"\x89PNG not really")
    assert publish(project).exit_code == 0
    site = project / "site"
    assert (site / "assets" / "img" / "logo.png").read_bytes() == b"\x89PNG not really"
    (site / "CNAME").write_text("news.example.org\n", encoding="utf-8")  # the host's, not ours
    (project / "assets" / "img" / "logo.png").unlink()
    result = publish(project)
    assert result.output.splitlines()[0] == "removed site/assets/img/logo.png"
    assert not (site / "assets").exists()
    assert (site / "CNAME").read_text(encoding="utf-8") == "news.example.org\n"


def test_publish_without_a_url_is_one_line(project: Path, publish: Publish) -> None:
    toml = project / "mailer.toml"
    toml.write_text(re.sub(r"(?m)^archive_url.*\n", "", toml.read_text("utf-8")), "utf-8")
    result = publish(project)
    assert result.exit_code == 2
    assert "publish needs the site's public URL" in one_line_error(result)
    other = publish(project, "--base-url", "https://archive.example.net/news")
    assert other.exit_code == 0, other.output
    feed = feedparser.parse((project / "site" / "feed.xml").read_bytes())
    assert feed.entries[0].id == "https://archive.example.net/news/issues/issue-2/"


def test_view_in_browser_link_names_the_published_page(project: Path, publish: Publish) -> None:
    result = CliRunner().invoke(main, ["-C", str(project), "build", "issue-2"])
    assert result.exit_code == 0, result.output
    email = (project / "build" / "issue-2" / "email.html").read_text(encoding="utf-8")
    link = f"{SITE}issues/issue-2/"
    assert f'href="{link}"' in email
    assert publish(project).exit_code == 0
    assert (project / "site" / link.removeprefix(SITE) / "index.html").is_file()


# -- the same pages from `mailer serve`, and in a browser -------------------------------------


@pytest.fixture
def served(project: Path) -> Iterator[tuple[int, Path]]:
    settings = config.load(
        project, environ={"MAILER_SECRET": SECRET, "MAILER_SUBSCRIBE_URL": SUBSCRIBE}
    )
    app = web.WebApp(settings)
    server = wsgi.Server(app, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server.port, project
    finally:
        server.stop()
        thread.join(5)
        server.close()
        app.close()


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


def test_mailer_serve_answers_with_the_published_bytes(
    served: tuple[int, Path], publish: Publish
) -> None:
    port, project = served
    assert publish(project).exit_code == 0
    site = project / "site"
    for path, file in (
        ("/issues/issue-2", "issues/issue-2/index.html"),
        ("/issues/issue-4/", "issues/issue-4/index.html"),
        ("/feed.xml", "feed.xml"),
    ):
        status, kind, body = _get(port, path)
        assert status == 200, path
        assert body == (site / file).read_bytes(), path
    assert _get(port, "/feed.xml")[1] == "application/atom+xml; charset=utf-8"
    status, _, index = _get(port, "/")
    assert status == 200
    text = index.decode("utf-8")
    assert '<time datetime="2024-05-01T10:00:00+00:00">2024-05-01</time>' in text
    assert 'href="/issues/issue-2"' in text and 'href="/issues/issue-4"' in text
    for private in ("/issues/issue-3", "/issues/issue-5", "/issues/issue-6"):
        assert _get(port, private)[0] == 404, private


def test_the_served_index_may_post_its_form_to_the_signup_page(served: tuple[int, Path]) -> None:
    port, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert f'action="{SUBSCRIBE}"' in resp.read().decode("utf-8")
        csp = resp.getheader("Content-Security-Policy") or ""
    finally:
        conn.close()
    assert "form-action 'self' https://forms.example.org;" in csp
    assert "script-src" not in csp


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_site_in_chromium(project: Path, browser, publish: Publish) -> None:  # type: ignore[no-untyped-def]
    assert publish(project).exit_code == 0
    handler = functools.partial(_Quiet, directory=str(project / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    page = browser.new_page()
    try:
        page.goto(f"http://127.0.0.1:{server.server_port}/")
        assert page.title() == "NLP Newsletter"
        assert page.locator("ol.issues li").count() == 2
        assert page.locator("ol.issues time").all_inner_texts() == ["2024-05-01", "2019-12-01"]
        form = page.locator("form.subscribe")
        assert form.get_attribute("action") == SUBSCRIBE
        assert form.get_attribute("method") == "post"
        assert page.locator("input[name=email]").is_visible()
        assert page.locator("input[name=name]").is_visible()
        # The trap for bots: in the form, but laid out off the page where no person sees it.
        trap = page.locator("input[name=website]").bounding_box()
        assert trap is not None and trap["x"] + trap["width"] <= 0
        assert page.locator("input[name=email]").evaluate("e => e.required")
        page.locator("a.title").first.click()
        page.wait_for_url("**/issues/issue-2/")
        assert page.title().startswith("NLP Newsletter #2")
        assert page.locator("h1").first.inner_text().startswith("NLP Newsletter #2")
        assert page.get_by_text("Unsubscribe", exact=True).count() == 0
        assert page.get_by_text("all issues").get_attribute("href") == SITE
    finally:
        page.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "value,expected",
    [
        ("2024-03-05", "2024-03-05T00:00:00+00:00"),
        ("2020-01-10 10:00:00 +0000", "2020-01-10T10:00:00+00:00"),  # Jekyll's
        ("2024-03-05T09:00:00.5Z", "2024-03-05T09:00:00.500000+00:00"),
        ("2024-03-05 09:00 Europe/Berlin", "2024-03-05T08:00:00+00:00"),
        ("Tue, 5 Mar 2024 09:00:00 -0500", "2024-03-05T14:00:00+00:00"),
    ],
)
def test_front_matter_dates(value: str, expected: str) -> None:
    from mailer.archive.catalog import moment

    assert moment(value).isoformat() == expected
    with pytest.raises(ValueError):
        moment("next Tuesday")
