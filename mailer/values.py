"""Setting values as users write them ('10/s', '24h', 'true'): parsed, and written back."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mailer.errors import ConfigError


def to_bool(raw: Any) -> bool:
    """true/false, yes/no, on/off, 1/0 (any case) -> bool; ValueError for anything else."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def to_int(raw: Any) -> int:
    """A whole number; a bool or a float (TOML 1.5) is refused, not truncated."""
    if isinstance(raw, bool | float):
        raise ValueError(raw)
    return int(raw)


def to_float(raw: Any) -> float:
    """A finite number; a bool is refused."""
    if isinstance(raw, bool):
        raise ValueError(raw)
    value = float(raw)
    if not math.isfinite(value):  # nan and inf pass float() but break every comparison
        raise ValueError(raw)
    return value


def to_duration(raw: Any) -> timedelta:
    """A duration as written (see parse_duration), or one already parsed."""
    if isinstance(raw, timedelta):
        return raw
    if isinstance(raw, bool):
        raise ValueError(raw)
    return timedelta(seconds=parse_duration(str(raw)))


def to_list(raw: Any) -> tuple[str, ...]:
    """A TOML list of text, or text with the items between commas -> a tuple."""
    if isinstance(raw, tuple | list):
        items = list(raw)
    elif isinstance(raw, str):
        items = raw.split(",")
    else:
        raise ValueError(raw)
    if not all(isinstance(i, str) for i in items):
        raise ValueError(raw)
    return tuple(i.strip() for i in items if i.strip())


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$", re.I)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", re.I)


def parse_rate(text: str | float) -> float:
    """'20/s', '600/min', '1000/h' -> messages per second; '0' or 'off' means unlimited (inf)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text == float("inf") or text == 0:
            return float("inf")
        if not 0 < text < float("inf"):
            raise ConfigError(f"rate {text!r} must be more than zero (or 'off' for no limit)")
        return float(text)
    text = str(text)
    if text.strip().lower() in ("0", "off", "none", "unlimited"):
        return float("inf")
    match = _RATE.match(text)
    if not match:
        raise ConfigError(f"rate {text!r} is not of the form N/s, N/min or N/h (or 'off')")
    if float(match.group(1)) <= 0:
        raise ConfigError(f"rate {text!r} must be more than zero (or 'off' for no limit)")
    per = {"s": 1, "m": 60, "h": 3600}[match.group(2)[0].lower()]
    return float(match.group(1)) / per


def format_rate(rate: float) -> str:
    """Messages per second as a user writes it: inf -> 'off', 10.0 -> '10/s', 0.5 -> '30/min'."""
    if rate == float("inf"):
        return "off"
    if rate >= 1:
        return f"{rate:g}/s"
    if rate * 60 >= 1:
        return f"{rate * 60:g}/min"
    return f"{rate * 3600:g}/h"


def parse_duration(text: str) -> float:
    """'90s', '15m', '24h', '2d' or plain seconds -> seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(f"duration {text!r} is not of the form 90s, 15m, 24h or 2d")
    unit = (match.group(2) or "s").lower()
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def format_duration(value: timedelta) -> str:
    """A duration as a user writes it: 24h, 2d, 15m, 90s."""
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        # 24h reads better than 1d; 2d better than 48h
        if seconds and seconds % size == 0 and (unit != "d" or seconds >= 2 * size):
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def masked_url(url: str) -> str:
    """A URL fit to print: its password, if any, replaced by ********."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:********@" if parts.username else ":********@"
    return urlunsplit(parts._replace(netloc=user + host))
