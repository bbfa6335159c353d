"""HTTP: one-click unsubscribes, the archive and SNS notifications.

`mailer.web:app` is the WSGI entry point for any WSGI server. It is looked up lazily, so that
importing `mailer.web.wsgi` (as the preview does) loads none of the routes.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from mailer.web.routes import app

        return app
    raise AttributeError(name)
