"""Shared fixtures. SMTP: a real aiosmtpd server on 127.0.0.1 (see smtp_server.py)."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from postfix import requires_postfix
from postgres import Postgres, requires_postgres, running_postgres, skip_reason
from smtp_server import SMTPServer, TLSFiles, make_tls_files

import mailer.campaign
import mailer.compose.render
from mailer.cli import main
from mailer.compose.issue import Issue
from mailer.compose.render import ComposeOptions, Email
from mailer.config import Settings
from mailer.state.ledger import Delivery, Ledger
from mailer.states import DeliveryState

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-of-the-suite"
# The bounce fixtures hold Message-IDs and VERP addresses made with this one.
FIXTURE_SECRET = "test-secret"
SENT, DEFERRED, FAILED = DeliveryState.SENT, DeliveryState.DEFERRED, DeliveryState.FAILED
BOUNCED = DeliveryState.BOUNCED


def delivery(ledger: Ledger, issue: str, email: str) -> Delivery | None:
    """One reader's delivery row for an issue, or None if never attempted."""
    return next((d for d in ledger.deliveries(issue) if d.email == email.lower()), None)


def done(ledger: Ledger, issue: str) -> set[str]:
    """The addresses a resumed run skips: sent, or failed for good."""
    return {d.email for d in ledger.deliveries(issue) if d.state in (SENT, FAILED)}


# Real newsletters and the seed, copied into the repository (see fixtures/PROVENANCE.md):
# the suite reads nothing outside it. Named, not globbed, so a missing file fails, not skips.
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SEED_FIXTURE = FIXTURES / "seed" / "issue-2.md"
CORPUS = [
    FIXTURES / "corpus" / name
    for name in (
        "nlp-newsletter-1-en.md",
        "nlp-newsletter-2-zh.md",
        "nlp-newsletter-3-en.md",
        "nlp-newsletter-3-pt-br.md",
    )
]
ZH = FIXTURES / "corpus" / "nlp-newsletter-2-zh.md"
PT_BR = FIXTURES / "corpus" / "nlp-newsletter-3-pt-br.md"


# -- markers: what a test needs beyond Python, so `make test-fast` can leave it out ---------

# A test is marked by the fixture that starts its server (whatever module it is in, and
# through fixtures that use that one), or by the skip marks of the helper that starts it
# in the test's body, so no module has to remember to say it. A test parametrized over the
# ledger's backends asks for PostgreSQL through request.getfixturevalue, which no marker
# can see: the parameter value "postgresql" marks it.
MARK_BY_FIXTURE = {
    "postgres_server": "postgres",
    "browser": "chromium",
    "moto_url": "moto",
    "dovecot": "dovecot",
}
MARK_BY_SKIPS = {"postfix": requires_postfix, "postgres": requires_postgres}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Add the marker of each server a test starts (see MARK_BY_FIXTURE, MARK_BY_SKIPS)."""
    for item in items:
        names = {MARK_BY_FIXTURE.get(f) for f in getattr(item, "fixturenames", ())}
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgresql" in callspec.params.values():
            names.add("postgres")
        skips = list(item.iter_markers("skipif"))
        names |= {n for n, marks in MARK_BY_SKIPS.items() if any(m.mark in skips for m in marks)}
        for name in sorted(names - {None}):
            item.add_marker(name)


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    """A plain SMTP server (no TLS, no AUTH), started for one test."""
    with SMTPServer() as server:
        yield server


@pytest.fixture(scope="session")
def smtp_tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost."""
    return make_tls_files(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp_server_factory() -> Iterator[Callable[..., SMTPServer]]:
    """Call with SMTPServer's keyword arguments to get a started server; all stop at teardown."""
    servers: list[SMTPServer] = []

    def start(**kwargs) -> SMTPServer:
        server = SMTPServer(**kwargs)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# -- a project to run `mailer` in ---------------------------------------------------------


def smtp_env(server: SMTPServer | None = None, port: int | None = None) -> dict[str, str]:
    """MAILER_* settings that point a send at a test server (or at a port nobody listens on)."""
    return {
        "MAILER_SMTP_HOST": "127.0.0.1",
        "MAILER_SMTP_PORT": str(server.port if server else port),
        "MAILER_SMTP_SECURITY": "none",
        "MAILER_SMTP_TIMEOUT": "5",
        "MAILER_SECRET": SECRET,
    }


@pytest.fixture
def empty_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with mailer.toml and an empty issues/; the caller's MAILER_* cleared."""
    for key in list(os.environ):
        if key.startswith("MAILER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # `-C` changes directory; this puts it back afterwards
    root = tmp_path / "news"
    (root / "issues").mkdir(parents=True)
    shutil.copy(ROOT / "mailer.toml", root)
    return root


@pytest.fixture
def new_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """Call with the subscribers.csv text: a project holding issue-2 and mailer.toml.

    The MAILER_* variables of whoever runs the tests are cleared, so only the test's count.
    """
    for key in list(os.environ):
        if key.startswith("MAILER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # `-C` changes directory; this puts it back afterwards

    def make(subscribers: str, name: str = "news") -> Path:
        root = tmp_path / name
        (root / "issues").mkdir(parents=True)
        shutil.copy(ROOT / "issues" / "issue-2.md", root / "issues")
        shutil.copy(ROOT / "mailer.toml", root)
        (root / "subscribers.csv").write_bytes(subscribers.encode("utf-8"))
        return root

    return make


MailerCli = Callable[..., Result]


@pytest.fixture
def mailer_cli() -> MailerCli:
    """Call as mailer_cli(project, *args, env=None, input=None): `mailer -C project ARGS`.

    Runs in this process through click's CliRunner and returns its Result: an exit code,
    a MailerError's included, is the test's to check. An uncaught exception is raised
    again with its own traceback (CliRunner would keep it in the Result, where a test
    checking only the exit code would never see it), and so is a printed "Traceback".
    `env` is merged over os.environ for the call; a None value unsets that variable.
    """

    def invoke(
        project: Path,
        *args: str | Path,
        env: Mapping[str, str | None] | None = None,
        input: str | None = None,
    ) -> Result:
        result = CliRunner().invoke(
            main, ["-C", str(project), *map(str, args)], env=env, input=input
        )
        error = result.exception
        if error is not None and not isinstance(error, SystemExit):
            error.add_note(f"`mailer {' '.join(map(str, args))}` printed:\n{result.output}")
            raise error
        assert "Traceback" not in result.output, result.output
        return result

    return invoke


def one_line_error(result: Result) -> str:
    """The error as printed: 'Error: ...' (plus at most a hint line), never a traceback."""
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


def seed_project(root: Path) -> Path:
    """root (made if need be) holding issues/issue-2.md and mailer.toml."""
    (root / "issues").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "issues" / "issue-2.md", root / "issues")
    shutil.copy(ROOT / "mailer.toml", root)
    return root


def greeting_templates(root: Path, greeting: str) -> None:
    """root/templates: the built-in templates, with `greeting` (MJML) right after the
    <mj-body ...> tag, whatever its attributes are today, and "Hello {{ subscriber.name }}
    from {{ subscriber.city }}" atop the text."""
    builtin = mailer.compose.render.BUILTIN_TEMPLATES
    (root / "templates").mkdir()
    source = (builtin / "newsletter.mjml.j2").read_text(encoding="utf-8")
    source, n = re.subn(r"(<mj-body\b[^>]*>)", lambda m: m.group(1) + greeting, source, count=1)
    assert n == 1
    (root / "templates" / "newsletter.mjml.j2").write_text(source, encoding="utf-8")
    text = (builtin / "newsletter.txt.j2").read_text(encoding="utf-8")
    (root / "templates" / "newsletter.txt.j2").write_text(
        "Hello {{ subscriber.name }} from {{ subscriber.city }}\n" + text, encoding="utf-8"
    )


@pytest.fixture(scope="module")
def module_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """issue-2 and mailer.toml in a folder, shared read-only by one test module."""
    return seed_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def built(module_project: Path) -> Callable[[Path], tuple[object, object]]:
    """Read and render an issue file once per module: get(path) -> (Issue, Email)."""
    from mailer import config
    from mailer.compose.issue import read
    from mailer.compose.render import render

    settings = config.load(module_project, environ={})
    done: dict[Path, tuple[object, object]] = {}

    def get(path: Path) -> tuple[object, object]:
        if path not in done:
            issue = read(path)
            done[path] = (issue, render(issue, settings))
        return done[path]

    return get


_RENDERED: dict[object, Email] = {}


@pytest.fixture
def render_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Speed: reuse a rendered Email when everything the render reads is the same.

    Rendering is deterministic and test_render.py covers it; in send tests it would cost
    ~0.3 s per command. The key is what render_with() reads (ComposeOptions, the templates'
    and the image-size cache's bytes, the issue's bytes), not the Settings: those differ
    between tests in the SMTP port and the project folder, which the render never sees.
    The Email comes back holding this call's Issue, so its path is this project's.
    """
    original = mailer.campaign.render

    def memo(issue: Issue, settings: Settings) -> Email:
        options = ComposeOptions.from_settings(settings)
        templates = tuple(
            (i, str(p.relative_to(d)), p.read_bytes())
            for i, d in enumerate(options.templates)
            for p in sorted(d.rglob("*.j2"))
        )
        sizes = options.image_sizes.read_bytes() if options.image_sizes.exists() else None
        where = dataclasses.replace(options, templates=(), image_sizes=Path())
        key = (issue.path.read_bytes(), issue.slug, where, templates, sizes)
        if key not in _RENDERED:
            _RENDERED[key] = original(issue, settings)
        return dataclasses.replace(_RENDERED[key], issue=issue)

    monkeypatch.setattr(mailer.campaign, "render", memo)


# -- a browser, for the preview page ------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own download needs the network
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    """Headless chromium (Debian's) driven by Playwright, shared by the whole session."""
    import os

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (`make system` installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


# -- a throwaway PostgreSQL, for the state in a database (see postgres.py) ----------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """One throwaway PostgreSQL cluster for the whole session (`make system` installs it).

    Started by the first test that asks for it (about a second), stopped and removed at the
    end of the session; skips where it cannot run (see postgres.requires_postgres). The login
    role is `postgres_server.user` ("mailer"), its password `postgres_server.password`;
    `postgres_server.admin()` is a superuser connection through the unix socket.
    """
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with running_postgres() as server:
        yield server


def postgres_env(server: Postgres) -> dict[str, str]:
    """The password the way mailer (libpq, psycopg) reads it: {"PGPASSWORD": ...}.

    Merge it into a subprocess's environment (`env={**os.environ, **postgres_env(server)}`),
    or set it with monkeypatch.setenv for code in the test's own process.
    """
    return server.env()


_POSTGRES_DATABASES = iter(range(1, 1_000_000))


@pytest.fixture
def postgres_url(
    postgres_server: Postgres, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A fresh, empty database for this test alone, owned by `mailer`: its URL, which holds
    no password (postgresql://mailer@127.0.0.1:PORT/t1_test_name).

    Give the password the way mailer will read it, through the environment variable
    PGPASSWORD, which libpq (so psycopg) reads by itself:
    `monkeypatch.setenv("PGPASSWORD", postgres_server.password)` for in-process code, or
    `env={**os.environ, **postgres_env(postgres_server)}` for a `mailer` subprocess.
    The PG* variables of whoever runs the tests are cleared (a PGSSLMODE or PGPASSWORD of
    theirs would change the outcome), and PGPASSFILE names a file that does not exist, so
    nothing but PGPASSWORD can supply a password. The database is left for the session's
    end, which removes the whole cluster.
    """
    for key in list(os.environ):
        if key.startswith("PG"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PGPASSFILE", str(postgres_server.data_dir.parent / "no-pgpass"))
    slug = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower()).strip("_")
    name = f"t{next(_POSTGRES_DATABASES)}_{slug}"[:63]  # PostgreSQL names: 63 bytes at most
    return postgres_server.fresh_database(name)


@pytest.fixture
def database_with_password(
    postgres_url: str, postgres_server: Postgres, monkeypatch: pytest.MonkeyPatch
) -> str:
    """postgres_url, with PGPASSWORD set for this process (and so for its subprocesses that
    copy os.environ): a database mailer can open as it would in production."""
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    return postgres_url
