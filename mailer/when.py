"""Times as people write them: ISO 8601 with an offset, or a wall time plus an IANA zone."""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_WALL = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})[ T](\d{1,2}:\d{2}(?::\d{2})?)\s*(\S+)?\s*$")


def zone(name: str) -> ZoneInfo:
    """An IANA zone by name, with an error that says what is wrong."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)"
        ) from None


def parse_when(value: object, tz: str | None = None) -> datetime:
    """'2026-12-01 09:00 Europe/Berlin', ISO 8601 with an offset, or a wall time + `tz` -> UTC.

    Naive times are refused: a send time must never depend on the machine's clock zone.
    A wall time that does not exist (skipped by a daylight-saving jump) is refused too;
    an ambiguous one (repeated by the jump back) means its first occurrence.
    """
    if isinstance(value, datetime):
        moment = value
        if moment.tzinfo is None:
            if not tz:
                raise ValueError(f"{value.isoformat()} has no time zone; add an offset or a zone")
            moment = _localise(moment, zone(tz))
        return moment.astimezone(UTC)
    if isinstance(value, date):
        raise ValueError(f"{value.isoformat()} is a date without a time")
    text = str(value).strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return _parse_wall(text, tz)
    return parse_when(moment, tz)


def _parse_wall(text: str, tz: str | None) -> datetime:
    """'2026-12-01 09:00 Europe/Berlin' (or the time alone with `tz`) -> aware UTC."""
    match = _WALL.match(text)
    if not match:
        raise ValueError(
            f"{text!r} is not a time like '2026-12-01 09:00 Europe/Berlin'"
            " or '2026-12-01T09:00+01:00'"
        )
    day, clock, zone_name = match.groups()
    if zone_name and tz and zone_name != tz:
        raise ValueError(f"{text!r} names zone {zone_name} but --tz says {tz}")
    zone_name = zone_name or tz
    if not zone_name:
        raise ValueError(f"{text!r} has no time zone; add an offset or an IANA zone name")
    return _localise(datetime.fromisoformat(f"{day}T{clock}"), zone(zone_name)).astimezone(UTC)


def _localise(naive: datetime, where: ZoneInfo) -> datetime:
    """Attach a zone to a wall time, refusing times that a daylight-saving jump skips."""
    aware = naive.replace(tzinfo=where, fold=0)
    round_trip = aware.astimezone(UTC).astimezone(where).replace(tzinfo=None)
    if round_trip != naive:
        raise ValueError(
            f"{naive:%Y-%m-%d %H:%M} does not exist in {where.key} (the clocks jump forward then)"
        )
    return aware


def now() -> datetime:
    """The current time, aware UTC; MAILER_NOW (an ISO time with offset) fixes it for tests."""
    fixed = os.environ.get("MAILER_NOW")
    return parse_when(fixed) if fixed else datetime.now(UTC)


def spoken(span: timedelta) -> str:
    """3 days, 2 hours, 90 minutes, 45 seconds."""
    seconds = int(span.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"
