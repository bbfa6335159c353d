"""Images' real sizes: fetched on request (`mailer build --fetch-images`), read offline by render.

Outlook desktop sizes an image by its `width` attribute and ignores CSS max-width, so every
content image gets a pixel width no wider than the column. The author's width wins; else the
image's real width, so a 32px badge stays 32px; else the column. Real widths come from
`images.json` in the state directory, which only `fetch_sizes` writes: it reads the first
64 KB of each image (an HTTP Range request; the size is in the header of PNG, GIF, WebP and
nearly every JPEG) and never more. Rendering reads the cache and never touches the network.

images.json maps each URL to [width, height], or to {"failed": "YYYY-MM-DD", "reason": ...}
for one that could not be sized; a failure is tried again by a fetch on a later day.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from markdown_it.token import Token

from mailer.config import Settings

CACHE_NAME = "images.json"
FIRST_BYTES = 65536  # what is read of each image, at most
TIMEOUT = 10.0  # seconds, for connecting and for each read
WORKERS = 4  # images fetched at once
RETRY_AFTER = timedelta(days=1)  # a failure is tried again by a fetch this much later
USER_AGENT = "mailer/0.1 (reads image sizes for an email newsletter)"

# The content column: a 600px body minus the mj-text padding (24px each side).
COLUMN_PX = 552

_IMG_TAG = re.compile(r"<img\b[^>]*>", re.I)
_SRC_ATTR = re.compile(r"""\bsrc\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.I)
_PIXELS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(px)?\s*$", re.I)
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


class SizeError(Exception):
    """Why one image could not be sized: one line, shown to the user."""


# -- the cache ------------------------------------------------------------------------------


def cache_file(settings: Settings) -> Path:
    return settings.state_path / CACHE_NAME


def _read(path: Path) -> dict[str, Any]:
    """The cache as written; missing or unreadable is empty (sizes are an optimisation)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _size(entry: Any) -> tuple[int, int] | None:
    """[w, h] with both positive integers, else None (a failure marker, or junk)."""
    if (
        isinstance(entry, list)
        and len(entry) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in entry)
    ):
        return entry[0], entry[1]
    return None


def load_sizes(cache: Path) -> dict[str, tuple[int, int]]:
    """Every real size in the cache file, url -> (width, height). Offline: reads only it."""
    sizes = {}
    for url, entry in _read(cache).items():
        size = _size(entry)
        if size:
            sizes[url] = size
    return sizes


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# -- which images ---------------------------------------------------------------------------


def raw_sources(content: str) -> list[str]:
    """The src of each <img> tag in raw HTML, entities decoded (as a browser would fetch it)."""
    out = []
    for tag in _IMG_TAG.findall(content):
        match = _SRC_ATTR.search(tag)
        if match:
            out.append(html.unescape(next(g for g in match.groups() if g is not None)))
    return out


def image_urls(tokens: Iterable[Token]) -> list[str]:
    """Every image source in the parsed issue, once each, in reading order."""
    found: list[str] = []

    def walk(items: Iterable[Token]) -> None:
        for token in items:
            if token.type == "image":
                found.append(str(token.attrs.get("src", "")))
            elif token.type in ("html_block", "html_inline"):
                found.extend(raw_sources(token.content))
            if token.children:
                walk(token.children)

    walk(tokens)
    return list(dict.fromkeys(u for u in found if u))


# -- sizes ----------------------------------------------------------------------------------


def _length(value: object, column: int) -> int | None:
    """An author's width or height ("200", "200px", "50%") in pixels, else None."""
    text = str(value) if value is not None else ""
    if match := _PIXELS.match(text):
        pixels = round(float(match.group(1)))
        return pixels if pixels > 0 else None
    if match := _PERCENT.match(text):
        pixels = round(column * float(match.group(1)) / 100)
        return pixels if pixels > 0 else None
    return None


def fit(
    width: object = None,
    height: object = None,
    real: tuple[int, int] | None = None,
    column: int = COLUMN_PX,
) -> tuple[int, int | None]:
    """(width, height or None) for an image's attributes, never wider than the column.

    width, height: what the author wrote (None if nothing). real: the image's own size, if
    known. The width is the author's, else the real one, else the column; capped at the
    column. A height comes only with a known shape (the real size, or the author's width and
    height together), scaled to the width; else there is none (Outlook keeps the image's
    own proportions when it has only a width; other clients follow height:auto).
    """
    author_w, author_h = _length(width, column), _length(height, column)
    if real:
        real_w, real_h = real
        if author_w is None and author_h is not None:
            author_w = round(real_w * author_h / real_h)
        chosen = min(author_w or real_w, column)
        return chosen, max(1, round(real_h * chosen / real_w))
    chosen = min(author_w or column, column)
    if author_w and author_h:
        return chosen, max(1, round(author_h * chosen / author_w))
    return chosen, None


# -- fetching -------------------------------------------------------------------------------


def probe(url: str, timeout: float = TIMEOUT) -> tuple[int, int]:
    """An image's (width, height) from at most its first FIRST_BYTES bytes; SizeError if not."""
    # Only `build --fetch-images` gets here: the HTTP machinery loads then, not on every build.
    import http.client
    import socket
    import ssl
    import urllib.error
    import urllib.request

    import imagesize

    request = urllib.request.Request(
        url,
        headers={
            "Range": f"bytes=0-{FIRST_BYTES - 1}",
            "User-Agent": USER_AGENT,
            "Accept": "image/*",
        },
    )
    try:
        with urllib.request.urlopen(
            request, timeout=timeout, context=ssl.create_default_context()
        ) as response:
            kind = response.headers.get_content_type()
            data = response.read(FIRST_BYTES)
    except urllib.error.HTTPError as exc:
        raise SizeError(f"HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError | socket.timeout):
            raise SizeError(f"timed out after {timeout:g} s") from None
        raise SizeError(str(getattr(reason, "strerror", None) or reason)) from None
    except TimeoutError:
        raise SizeError(f"timed out after {timeout:g} s") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise SizeError(str(exc) or type(exc).__name__) from None
    width, height = imagesize.get(io.BytesIO(data))
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        if not kind.startswith("image/"):
            raise SizeError(f"not an image ({kind})")
        raise SizeError(f"no size in the first {FIRST_BYTES // 1024} KB ({kind})")
    return width, height


@dataclass(frozen=True)
class Fetched:
    """What one fetch did: new sizes, failures (url -> reason), and what it left alone."""

    cache: Path
    sized: dict[str, tuple[int, int]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    known: tuple[str, ...] = ()  # sized by an earlier fetch
    skipped: tuple[str, ...] = ()  # not http(s): nothing to fetch


def fetch_sizes(
    settings: Settings,
    urls: Iterable[str],
    *,
    today: date | None = None,
    timeout: float = TIMEOUT,
    workers: int = WORKERS,
) -> Fetched:
    """Size every image not in the cache yet (a few at once) and record what happened.

    A failure recorded on an earlier day is tried again; one recorded today is reported
    again without a request. Nothing here raises for an image: failures are data.
    """
    today = today or date.today()
    wanted = list(dict.fromkeys(urls))
    path = cache_file(settings)
    cache = _read(path)
    known: list[str] = []
    skipped: list[str] = []
    failed: dict[str, str] = {}
    todo: list[str] = []
    for url in wanted:
        entry = cache.get(url)
        if not url.lower().startswith(("http://", "https://")):
            skipped.append(url)
        elif _size(entry):
            known.append(url)
        elif isinstance(entry, dict) and _tried_since(entry, today - RETRY_AFTER):
            reason = entry.get("reason", "failed")
            failed[url] = f"{reason} (on {entry['failed']}; tried again from tomorrow)"
        else:
            todo.append(url)

    def one(url: str) -> tuple[str, tuple[int, int] | str]:
        try:
            return url, probe(url, timeout)
        except SizeError as exc:
            return url, str(exc)

    sized: dict[str, tuple[int, int]] = {}
    if todo:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool:
            results = list(pool.map(one, todo))
        for url, result in results:
            if isinstance(result, tuple):
                sized[url] = result
                cache[url] = list(result)
            else:
                failed[url] = result
                cache[url] = {"failed": today.isoformat(), "reason": result}
        _write(path, cache)
    order = {url: i for i, url in enumerate(wanted)}
    return Fetched(
        cache=path,
        sized=sized,
        failed=dict(sorted(failed.items(), key=lambda kv: order.get(kv[0], 0))),
        known=tuple(known),
        skipped=tuple(skipped),
    )


def _tried_since(entry: dict[str, Any], since: date) -> bool:
    """A failure marker dated after `since` (so not worth another request yet)."""
    try:
        return date.fromisoformat(str(entry.get("failed"))) > since
    except ValueError:
        return False
