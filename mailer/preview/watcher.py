"""The live side of the preview: the current render of one issue, re-made when its inputs change.

A watcher thread (`Preview.watch`) polls the issue, the templates, the subscriber list and the
settings files every POLL_SECONDS and re-renders into the in-memory state; pages waiting in
`Preview.wait` are woken when the version moves. A failed render keeps the last good one.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from mailer import config as config_mod
from mailer.compose import load
from mailer.compose.issue import slug_of
from mailer.compose.render import template_dirs
from mailer.config import Settings
from mailer.errors import MailerError
from mailer.preview.snapshot import (
    Snapshot,
    build,
    error_state,
    relative,
    stat_key,
    subscriber_files,
)

POLL_SECONDS = 0.3  # how often the watcher looks at the files

Signature = tuple[tuple[str, tuple[int, int, int] | None], ...]


def _flag_overrides(settings: Settings) -> dict[str, Any]:
    """The settings that came from command-line flags: kept when mailer.toml is re-read."""
    return {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(Settings)
        if settings.sources.get(f.name.rstrip("_")) == "flag"
    }


def _watched(path: Path) -> bool:
    """Not an editor's swap or backup file (vim writes .x.swp every few seconds)."""
    name = path.name
    return not (name.startswith((".", "#")) or name.endswith(("~", ".swp", ".swx", ".tmp")))


class Preview:
    """The current render of one issue, re-made whenever one of its inputs changes."""

    def __init__(self, settings: Settings, issue: str, as_email: str | None = None) -> None:
        self.settings = settings
        self.root = settings.root
        self.as_email = as_email
        self.path = load.resolve(issue, settings.root).resolve()
        self.overrides = _flag_overrides(settings)
        self.instance = secrets.token_hex(6)
        self.cond = threading.Condition()
        self.version = 0
        self.closed = False
        self.snapshot: Snapshot | None = None
        self.good_at: float | None = None
        self.error: dict[str, Any] | None = None
        self.updated_at = 0.0
        self._config_sig: Signature = self._signature(self._config_files())
        self._input_sig: Signature = ()
        self._config_broken = False

    # files

    def _config_files(self) -> list[Path]:
        return [self.root / config_mod.CONFIG_FILE, self.root / ".env"]

    def _input_files(self) -> list[Path]:
        files = [self.path, *subscriber_files(self.settings)]
        try:
            dirs = template_dirs(self.settings)
        except MailerError:
            dirs = []
        for folder in dict.fromkeys([*dirs, self.root / "templates"]):
            files.append(folder)  # its own mtime changes when a file is added or removed
            if folder.is_dir():
                files += sorted(p for p in folder.rglob("*") if p.is_file() and _watched(p))[:500]
        return files

    @staticmethod
    def _signature(paths: list[Path]) -> Signature:
        return tuple((str(p), stat_key(p)) for p in paths)

    # rendering

    def refresh(self, *, reload_settings: bool = False) -> None:
        """Re-render now (re-reading the settings first if asked) and tell the waiting pages."""
        self._input_sig = self._signature(self._input_files())
        error = None
        snapshot = None
        try:
            if reload_settings or self._config_broken:
                self._config_broken = True
                self.settings = config_mod.load(self.root, overrides=self.overrides)
                self._config_broken = False
                self._input_sig = self._signature(self._input_files())
            snapshot = build(self.settings, self.path, self.as_email)
        except Exception as exc:  # noqa: BLE001 - any failure is shown on the page
            error = error_state(exc, self.settings)
        with self.cond:
            if snapshot is not None:
                self.snapshot = snapshot
                self.good_at = time.time()
            self.error = error
            self.version += 1
            self.updated_at = time.time()
            self.cond.notify_all()

    def check(self) -> bool:
        """Re-render if any input changed since the last look; True if it did."""
        config_sig = self._signature(self._config_files())
        config_changed = config_sig != self._config_sig
        if config_changed:
            self._config_sig = config_sig
        if config_changed or self._signature(self._input_files()) != self._input_sig:
            self.refresh(reload_settings=config_changed)
            return True
        return False

    def watch(self, stop: threading.Event, interval: float = POLL_SECONDS) -> None:
        """Poll the inputs until `stop` is set."""
        while not stop.wait(interval):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive anything
                with self.cond:
                    self.error = error_state(exc, self.settings)
                    self.version += 1
                    self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # what the page gets

    def state(self, *, live: bool = True) -> dict[str, Any]:
        with self.cond:
            base = (
                dict(self.snapshot.state)
                if self.snapshot
                else {
                    "issue": {
                        "slug": slug_of(self.path),
                        "path": relative(self.path, self.root),
                        "title": slug_of(self.path),
                    },
                }
            )
            return {
                **base,
                "ok": self.snapshot is not None,
                "version": self.version,
                "instance": self.instance,
                "live": live,
                "error": self.error,
                "updated_at": round(self.updated_at * 1000),
                "good_at": round(self.good_at * 1000) if self.good_at else None,
            }

    def wait(self, since: int, instance: str, timeout: float) -> None:
        """Block until the version moves past `since` (or the server restarted, or timeout)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while (
                not self.closed
                and instance == self.instance
                and self.version == since
                and (left := deadline - time.monotonic()) > 0
            ):
                self.cond.wait(left)
