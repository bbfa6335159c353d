"""`mailer preview`: one local page showing an issue as readers will see it, live while edited.

The page (page.html: inline CSS and JS, no external assets) shows the email at phone and
desktop widths, its plaintext twin, the headers one subscriber's copy carries, and the build's
warnings. The package, by step:

    snapshot.py   one render for one reader: the message, the warnings, the error banner
    watcher.py    Preview: the current render, re-made when an input changes; long-poll waits
    findings.py   the lint's findings about the issue, as rows beside the warnings
    testcopy.py   "send a test to me": one test copy to the --to address, asked by the page
    app.py        the WSGI app serving it (mailer.web.wsgi serves it, as it serves mailer.web)

Never prints: the CLI reports through the `ready` callback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from mailer.config import Settings
from mailer.preview.app import PreviewApp, page
from mailer.preview.snapshot import build
from mailer.preview.testcopy import TestCopies
from mailer.preview.watcher import Preview
from mailer.web import wsgi

__all__ = ["THREADS", "serve", "write_static"]

# Each open page holds one thread in its long poll; a browser opens at most 6 connections to
# one host, so 16 leave room for a second browser and the page's other requests, and the app
# parks at most THREADS - 4 polls at once (others are answered at once) so loads never wait.
THREADS = 16


def serve(
    settings: Settings,
    issue: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8025,
    as_email: str | None = None,
    send_to: str | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the preview until KeyboardInterrupt; call ready(url) once listening.

    With `send_to`, the page offers to send one test copy there.
    """
    preview = Preview(settings, issue, as_email)  # an unknown issue fails here, before binding
    copies = TestCopies(preview, send_to) if send_to else None
    # Bound to loopback, only requests naming loopback are answered (DNS rebinding).
    app = PreviewApp(
        preview, host_check=wsgi.is_loopback(host), max_waiting=THREADS - 4, copies=copies
    )
    stop = threading.Event()
    watcher = threading.Thread(
        target=preview.watch, args=(stop,), name="preview-watch", daemon=True
    )
    with wsgi.Server(app, host=host, port=port, threads=THREADS) as server:
        try:
            preview.refresh()
            watcher.start()
            if ready is not None:
                ready(server.url)
            server.run()
        finally:
            stop.set()
            preview.close()  # wake the waiting long polls before the server joins its threads
            if watcher.is_alive():
                watcher.join(timeout=2)


def write_static(
    settings: Settings, issue: str, out: Path, *, as_email: str | None = None
) -> list[Path]:
    """Write index.html (+ email.html, email.txt, message.eml) to out; return the paths."""
    preview = Preview(settings, issue, as_email)
    snapshot = build(settings, preview.path, as_email)  # a broken issue raises: no error page
    preview.snapshot = snapshot
    preview.updated_at = preview.good_at = time.time()
    preview.version = 1
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "index.html": page(preview.state(live=False)).encode("utf-8"),
        "email.html": snapshot.html.encode("utf-8"),
        "email.txt": snapshot.text.encode("utf-8"),
        "message.eml": snapshot.message,
    }
    written = []
    for name, data in files.items():
        target = out / name
        target.write_bytes(data)
        written.append(target)
    return written
