"""Setting values as users write them ('10/s', '24h', 'true'): parsed, and written back."""

from __future__ import annotations

import colorsys
import math
import re
from dataclasses import dataclass
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


# scheme://user:password@ as written, for a URL urlsplit cannot take apart ("[::1:5432"):
# up to the last @, as masking too much is better than showing part of a password.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*:)(.*)(@)", re.S)


def masked_url(url: str) -> str:
    """A URL fit to print: its password, if any, replaced by ********; even a malformed one."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return _USERINFO.sub(r"\1********\3", url)
    if not password:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:********@" if parts.username else ":********@"
    return urlunsplit(parts._replace(netloc=user + host))


# Colours. The lint stage has its own CSS colour maths (mailer/lint/colours.py), but the
# settings sit below it in the layers; this is the little of it they need: `#rrggbb` only.
HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
AA_CONTRAST = 4.5  # WCAG 2 AA, body text


def luminance(colour: str) -> float:
    """WCAG relative luminance of a `#rrggbb` colour (0: black, 1: white)."""

    def linear(channel: str) -> float:
        c = int(channel, 16) / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(colour[i : i + 2]) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two `#rrggbb` colours, 1 to 21."""
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def readable_shade(colour: str, background: str, ratio: float = AA_CONTRAST) -> str:
    """`colour` if text in it is readable on `background`, else the nearest shade that is."""
    # Only the lightness moves (away from the background's): a brand blue stays that blue.
    if contrast(colour, background) >= ratio:
        return colour
    hue, light, saturation = colorsys.rgb_to_hls(
        *(int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    )
    step = 0.01 if luminance(background) < 0.5 else -0.01
    shade = colour
    for _ in range(100):  # black to white in 0.01 steps of lightness: never more
        if contrast(shade, background) >= ratio:
            break
        light = min(1.0, max(0.0, light + step))
        r, g, b = colorsys.hls_to_rgb(hue, light, saturation)
        shade = f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
    return shade


def hard_to_read(colour: str, background: str) -> str | None:
    """Why text in `colour` fails WCAG AA on `background`, with a shade that passes; or None."""
    ratio = contrast(colour, background)
    if ratio >= AA_CONTRAST:
        return None
    return (
        f"{colour} on {background} has contrast {ratio:.1f}:1, WCAG AA needs {AA_CONTRAST:g}:1:"
        f" links will be hard to read (the nearest readable shade is"
        f" {readable_shade(colour, background)})"
    )


def text_on(background: str) -> str:
    """A label colour for `background` (a button): white when it is readable, else black."""
    white = contrast("#ffffff", background)
    return (
        "#ffffff" if white >= AA_CONTRAST or white >= contrast("#000000", background) else "#000000"
    )


COUNT, SECONDS, DURATION, RATE = "count", "seconds", "duration", "rate"


@dataclass(frozen=True)
class Bounds:
    """The sane range of a number a user gives, a setting or a flag; both ends included."""

    low: float
    high: float
    unit: str = COUNT  # count: int; seconds: float; duration: timedelta; rate: per second

    def describe(self) -> str:
        """What a good value looks like: 'a whole number from 1 to 100'."""
        low, high = self.span()
        what = {
            COUNT: "a whole number",
            SECONDS: "a number of seconds",
            DURATION: "a duration",
            RATE: "a rate",
        }[self.unit]
        return f"{what} from {low} to {high}" + (" (or off)" if self.unit == RATE else "")

    def span(self) -> tuple[str, str]:
        """Both ends as a user writes them: ('1', '100'), ('1m', '365d'), ('1/h', '100000/s')."""
        if self.unit == DURATION:
            return format_duration(timedelta(seconds=self.low)), format_duration(
                timedelta(seconds=self.high)
            )
        if self.unit == RATE:
            return format_rate(self.low), format_rate(self.high)
        return _number(self.low), _number(self.high)

    def parse(self, raw: Any) -> Any:
        """A TOML value, environment text or flag -> int, float or timedelta; ValueError (or
        ConfigError, for a rate or duration of the wrong form) when it is outside the range."""
        if self.unit == COUNT:
            return self._within(to_int(raw), raw)
        if self.unit == SECONDS:
            return self._within(to_float(raw), raw)
        if self.unit == DURATION:
            if isinstance(raw, bool):
                raise ValueError(raw)
            seconds = raw.total_seconds() if isinstance(raw, timedelta) else parse_duration(raw)
            # Checked before timedelta() sees it: past 999,999,999 days it overflows.
            return timedelta(seconds=self._within(seconds, raw))
        rate = parse_rate(raw)
        return rate if rate == float("inf") else self._within(rate, raw)

    def _within(self, value: Any, raw: Any) -> Any:
        if not self.low <= value <= self.high:
            raise ValueError(raw)
        return value


def _number(value: float) -> str:
    """1000000 rather than 1e+06; 0.5 as it is."""
    return str(int(value)) if value == int(value) else f"{value:g}"


def check_database_url(url: str) -> None:
    """A postgresql:// URL whose host and port can be read; shown with its password masked."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"database_url must be a postgresql:// URL, got {masked_url(url)!r}",
            hint="leave it empty for the SQLite ledger in state_dir",
        )
    try:
        parts = urlsplit(url)
        if "," not in parts.netloc:  # libpq's host1:port1,host2:port2 is no URL to urlsplit
            parts.port  # noqa: B018 - reading it checks the port: a number from 0 to 65535
    except ValueError as exc:
        reason = str(exc)[:1].lower() + str(exc)[1:]
        raise ConfigError(
            f"database_url must be a URL like postgresql://user@host:5432/db,"
            f" got {masked_url(url)!r} ({reason})"
        ) from None


def url_has_password(url: str) -> bool:
    """Whether a URL carries a password (a malformed one: whether masking changes it)."""
    try:
        return bool(urlsplit(url).password)
    except ValueError:  # malformed: _validate says so, after this check for a password
        return masked_url(url) != url


def written(value: Any, *, rate: bool = False) -> str:
    """A setting's value as a user would write it: '10/s', '24h', 'true', 'a, b'."""
    if rate:
        return format_rate(value)
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, tuple):
        return ", ".join(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


LIGHT_BACKGROUND = "#ffffff"  # the built-in template's card


def check_brand(logo: str, accent_color: str) -> None:
    """The logo is an https URL (an http image is blocked or warned about); the colour is hex."""
    parts = urlsplit(logo)
    if logo and (parts.scheme != "https" or not parts.hostname):
        raise ConfigError(f"logo must be an https:// image URL, got {logo!r}")
    if accent_color and not HEX_COLOUR.match(accent_color):
        raise ConfigError(f"accent_color must be a colour like #1a7f64, got {accent_color!r}")


def brand_warnings(accent_color: str) -> list[str]:
    """A warning when links in the accent colour would be hard to read on the light card."""
    # None for dark mode: no colour reads at 4.5:1 on both white and a dark background, so
    # the template shows a lighter shade there (readable_shade), readable by design.
    problem = hard_to_read(accent_color, LIGHT_BACKGROUND) if accent_color else None
    return [f"accent_color {problem}"] if problem else []
