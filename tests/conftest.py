"""Shared fixtures. SMTP: a real aiosmtpd server on 127.0.0.1 (see smtp_server.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from smtp_server import SMTPServer, TLSFiles, make_tls_files


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
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium, or `make browser`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
