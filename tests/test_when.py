"""Points in time as people write them (mailer.when): offsets, IANA zones, DST, MAILER_NOW."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from mailer.when import now, parse_when, zone


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T09:00+01:00", utc(2026, 12, 1, 8, 0)),
        ("2026-12-01T09:00:00+01:00", utc(2026, 12, 1, 8, 0)),
        ("2026-12-01 09:00+01:00", utc(2026, 12, 1, 8, 0)),
        ("2026-12-01T08:00Z", utc(2026, 12, 1, 8, 0)),
        ("2026-12-01T03:00-05:00", utc(2026, 12, 1, 8, 0)),
        ("2026-12-01 09:00 Europe/Berlin", utc(2026, 12, 1, 8, 0)),  # CET, +01:00
        ("2026-07-01 09:00 Europe/Berlin", utc(2026, 7, 1, 7, 0)),  # CEST, +02:00
        ("2026-12-01T09:00 Europe/Berlin", utc(2026, 12, 1, 8, 0)),
        ("2026-12-01 09:00:30 Europe/Berlin", utc(2026, 12, 1, 8, 0, 30)),
        ("  2026-12-01 09:00   Europe/Berlin  ", utc(2026, 12, 1, 8, 0)),
        ("2026-12-01 09:00 America/New_York", utc(2026, 12, 1, 14, 0)),
        ("2026-12-01 09:00 UTC", utc(2026, 12, 1, 9, 0)),
    ],
)
def test_parses_offsets_and_zones_to_aware_utc(text: str, expected: datetime) -> None:
    got = parse_when(text)
    assert got == expected
    assert got.utcoffset() == timedelta(0)
    assert got.tzinfo is UTC


def test_wall_time_with_tz_argument() -> None:
    assert parse_when("2026-12-01 09:00", "Europe/Berlin") == utc(2026, 12, 1, 8, 0)
    assert parse_when("2026-12-01T09:00", "Europe/Berlin") == utc(2026, 12, 1, 8, 0)
    # The same zone named twice is fine.
    assert parse_when("2026-12-01 09:00 Europe/Berlin", "Europe/Berlin") == utc(2026, 12, 1, 8)


def test_datetime_values_from_yaml() -> None:
    aware = datetime(2026, 12, 1, 9, 0, tzinfo=zone("Europe/Berlin"))
    assert parse_when(aware) == utc(2026, 12, 1, 8, 0)
    assert parse_when(datetime(2026, 12, 1, 9, 0), "Europe/Berlin") == utc(2026, 12, 1, 8, 0)


@pytest.mark.parametrize(
    "value",
    ["2026-12-01 09:00", "2026-12-01T09:00", "2026-12-01T09:00:00", datetime(2026, 12, 1, 9)],
)
def test_naive_times_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="no time zone"):
        parse_when(value)


def test_date_without_time_is_refused() -> None:
    with pytest.raises(ValueError, match="date without a time"):
        parse_when(date(2026, 12, 1))


@pytest.mark.parametrize("text", ["tomorrow", "", "09:00", "next monday 9am"])
def test_garbage_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a time like '2026-12-01 09:00 Europe/Berlin'"):
        parse_when(text)


def test_impossible_date_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_when("2026-13-45 09:00 Europe/Berlin")
    with pytest.raises(ValueError):
        parse_when("2026-02-30T09:00+01:00")


def test_unknown_zone_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown time zone 'Mars/Olympus'"):
        parse_when("2026-12-01 09:00 Mars/Olympus")
    with pytest.raises(ValueError, match=r"unknown time zone 'Nowhere/Land'"):
        parse_when("2026-12-01 09:00", "Nowhere/Land")


def test_conflicting_zones_are_refused() -> None:
    with pytest.raises(ValueError, match="Europe/Paris"):
        parse_when("2026-12-01 09:00 Europe/Berlin", "Europe/Paris")


# -- daylight saving time: Europe/Berlin springs forward 2026-03-29 02:00 -> 03:00 and
#    falls back 2026-10-25 03:00 -> 02:00. ------------------------------------------------


@pytest.mark.parametrize(
    ("wall", "expected"),
    [
        ("2026-03-29 01:59", utc(2026, 3, 29, 0, 59)),  # last minute of CET
        ("2026-03-29 03:00", utc(2026, 3, 29, 1, 0)),  # first minute of CEST
        ("2026-03-29 09:00", utc(2026, 3, 29, 7, 0)),  # the morning after the jump: +02:00
        ("2026-03-28 09:00", utc(2026, 3, 28, 8, 0)),  # the day before: +01:00
        ("2026-10-24 09:00", utc(2026, 10, 24, 7, 0)),  # the day before fall-back: +02:00
        ("2026-10-25 01:59", utc(2026, 10, 24, 23, 59)),
        ("2026-10-25 02:30", utc(2026, 10, 25, 0, 30)),  # ambiguous: the first occurrence
        ("2026-10-25 03:00", utc(2026, 10, 25, 2, 0)),  # CET again
        ("2026-10-25 09:00", utc(2026, 10, 25, 8, 0)),
    ],
)
def test_berlin_dst_switches(wall: str, expected: datetime) -> None:
    assert parse_when(wall, "Europe/Berlin") == expected
    assert parse_when(f"{wall} Europe/Berlin") == expected


@pytest.mark.parametrize("wall", ["2026-03-29 02:00", "2026-03-29 02:30", "2026-03-29 02:59"])
def test_time_skipped_by_spring_forward_is_refused(wall: str) -> None:
    with pytest.raises(ValueError, match="does not exist in Europe/Berlin"):
        parse_when(wall, "Europe/Berlin")
    with pytest.raises(ValueError, match="does not exist"):
        parse_when(f"{wall} Europe/Berlin")
    naive = datetime.fromisoformat(wall)
    with pytest.raises(ValueError, match="does not exist"):
        parse_when(naive, "Europe/Berlin")


def test_skipped_time_in_another_zone() -> None:
    # New York springs forward 2026-03-08 02:00 -> 03:00.
    with pytest.raises(ValueError, match="does not exist in America/New_York"):
        parse_when("2026-03-08 02:30 America/New_York")
    assert parse_when("2026-03-08 03:30 America/New_York") == utc(2026, 3, 8, 7, 30)


def test_explicit_offset_is_taken_as_written_even_across_dst() -> None:
    # The second 02:30 of 2026-10-25 can still be named with its offset.
    assert parse_when("2026-10-25T02:30+01:00") == utc(2026, 10, 25, 1, 30)
    assert parse_when("2026-10-25T02:30+02:00") == utc(2026, 10, 25, 0, 30)


# -- now() ----------------------------------------------------------------------------


def test_now_honours_mailer_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_NOW", "2026-12-01T09:00+01:00")
    assert now() == utc(2026, 12, 1, 8, 0)
    monkeypatch.setenv("MAILER_NOW", "2026-10-25 02:30 Europe/Berlin")
    assert now() == utc(2026, 10, 25, 0, 30)


def test_now_without_mailer_now_is_the_real_aware_utc_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MAILER_NOW", raising=False)
    before = datetime.now(UTC)
    got = now()
    after = datetime.now(UTC)
    assert got.tzinfo is not None and got.utcoffset() == timedelta(0)
    assert before <= got <= after


def test_naive_mailer_now_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_NOW", "2026-12-01T09:00")
    with pytest.raises(ValueError, match="no time zone"):
        now()
