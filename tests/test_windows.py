"""Pure scheduler rules, without Celery or a database: send windows, recurring slots, the schema."""

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from campaigns.errors import SubmissionError
from campaigns.schema import CampaignSpec, SendWindow
from campaigns.recurring import resolve_slot
from campaigns.windows import Window, is_open, next_open, zones_for

UTC = timezone.utc
DAY = Window.from_dict({"start": "09:00", "end": "20:00"})
MONDAY_0830 = datetime(2026, 11, 23, 8, 30, tzinfo=UTC)


def local(at: datetime, zone: str) -> time:
    return at.astimezone(ZoneInfo(zone)).time()


@pytest.mark.parametrize("phone, opens_utc", [
    ("+254701234567", MONDAY_0830),                              # Nairobi 11:30: open now
    ("+447400123456", datetime(2026, 11, 23, 9, 0, tzinfo=UTC)),  # London 08:30: opens at 09:00
    ("+12015550123", datetime(2026, 11, 23, 14, 0, tzinfo=UTC)),  # New York 03:30 (EST)
    ("+13105550123", datetime(2026, 11, 23, 17, 0, tzinfo=UTC)),  # Los Angeles 00:30 (PST)
])
def test_each_number_opens_at_nine_in_its_own_zone(phone, opens_utc):
    assert next_open(DAY, zones_for(phone, DAY), MONDAY_0830) == opens_utc


def test_a_number_in_several_zones_waits_for_the_hours_all_of_them_allow():
    zones = zones_for("+79161234567", DAY)  # a Russian mobile: Kaliningrad-ish to Anadyr
    assert len(zones) > 5
    at = next_open(DAY, zones, MONDAY_0830)
    assert all(time(9) <= local(at, z) < time(20) for z in zones)
    assert any(not time(9) <= local(MONDAY_0830, z) < time(20) for z in zones)
    # Bucharest allows 07:00-18:00 UTC, Anadyr 21:00-08:00 UTC: only 07:00-08:00 UTC suits all.
    assert at == datetime(2026, 11, 24, 7, 0, tzinfo=UTC)


def test_a_fixed_zone_overrides_the_numbers_own():
    window = Window.from_dict({"start": "09:00", "end": "20:00", "timezone": "Asia/Tokyo"})
    assert zones_for("+447400123456", window) == ("Asia/Tokyo",)
    # 08:30 UTC is 17:30 in Tokyo: open, though London is not.
    assert next_open(window, zones_for("+447400123456", window), MONDAY_0830) == MONDAY_0830


def test_zones_that_never_overlap_give_never():
    assert next_open(DAY, ("Europe/London", "Pacific/Auckland"), MONDAY_0830) is None


def test_a_window_across_midnight():
    night = Window.from_dict({"start": "22:00", "end": "06:00", "timezone": "UTC"})
    assert is_open(night, ("UTC",), datetime(2026, 11, 23, 23, 0, tzinfo=UTC))
    assert is_open(night, ("UTC",), datetime(2026, 11, 23, 5, 59, tzinfo=UTC))
    assert not is_open(night, ("UTC",), datetime(2026, 11, 23, 6, 0, tzinfo=UTC))
    assert next_open(night, ("UTC",), MONDAY_0830) == datetime(2026, 11, 23, 22, 0, tzinfo=UTC)


def test_the_end_is_exclusive():
    assert not is_open(DAY, ("UTC",), datetime(2026, 11, 23, 20, 0, tzinfo=UTC))
    assert is_open(DAY, ("UTC",), datetime(2026, 11, 23, 19, 59, 59, tzinfo=UTC))


def test_across_a_dst_change_nine_stays_nine_local():
    # London moves to BST on 2026-03-29: 09:00 local is 09:00 UTC the day before, 08:00 UTC that day.
    after = datetime(2026, 3, 28, 20, 30, tzinfo=UTC)
    first = next_open(DAY, ("Europe/London",), after)
    assert first == datetime(2026, 3, 29, 8, 0, tzinfo=UTC)


ZONE_SETS = [("Europe/London",), ("America/Los_Angeles",), ("Asia/Kolkata", "Asia/Kathmandu"),
             ("Australia/Sydney", "Australia/Perth"), ("America/New_York", "America/Chicago", "America/Denver")]


@settings(max_examples=40, deadline=None)
@given(after=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)),
       zones=st.sampled_from(ZONE_SETS),
       start=st.integers(0, 23 * 60 + 59), length=st.integers(30, 20 * 60))
def test_next_open_is_open_and_nothing_earlier_is(after, zones, start, length):
    end = (start + length) % (24 * 60)
    window = Window(time(start // 60, start % 60), time(end // 60, end % 60))
    at = next_open(window, zones, after)
    # None claims the zones' windows never overlap: then no minute of two whole days is open.
    assert at is None or (at >= after and is_open(window, zones, at))
    probe = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while probe < (at or after + timedelta(days=2)):
        assert not is_open(window, zones, probe), probe
        probe += timedelta(minutes=1)


def test_unplaceable_numbers_fall_back_to_utc():
    assert zones_for("+80012345678", DAY) == ("UTC",)


# -- recurring slots --------------------------------------------------------------------------

WEEK = 7 * 24 * 3600


def test_one_slot_one_key_and_the_next_slot_a_new_one():
    entry = {"from": "A", "message": "m", "recipients": ["+447400123456"],
             "idempotency_key": "offers:{slot}", "slot_seconds": WEEK}
    monday = datetime(2026, 11, 23, 9, 0, 0, 300000, tzinfo=UTC)
    first = resolve_slot(entry, monday)
    assert first["idempotency_key"] == resolve_slot(entry, monday + timedelta(minutes=5))["idempotency_key"]
    assert first["idempotency_key"] != resolve_slot(entry, monday + timedelta(days=7))["idempotency_key"]
    assert "slot_seconds" not in first and entry["slot_seconds"] == WEEK
    assert first["idempotency_key"].startswith("offers:2026-11-")


def test_a_submission_without_slot_is_left_alone():
    entry = {"from": "A", "idempotency_key": "plain"}
    assert resolve_slot(entry, MONDAY_0830) == entry


@pytest.mark.parametrize("entry, field", [
    ({"idempotency_key": "k:{slot}"}, "slot_seconds"),
    ({"idempotency_key": "k:{slot}", "slot_seconds": 0}, "slot_seconds"),
    ({"idempotency_key": "fixed", "slot_seconds": 60}, "slot_seconds"),
])
def test_slot_mistakes_are_named(entry, field):
    with pytest.raises(SubmissionError) as err:
        resolve_slot(entry, MONDAY_0830)
    assert err.value.errors[0]["loc"] == [field]


# -- schema --------------------------------------------------------------------------------------

@pytest.mark.parametrize("window, message", [
    ({"start": "09:00", "end": "09:00"}, "must differ"),
    ({"start": "25:00", "end": "09:00"}, "pattern"),
    ({"start": "09:00", "end": "20:00", "timezone": "Mars/Olympus"}, "unknown time zone"),
])
def test_bad_windows_are_refused_with_the_reason(window, message):
    with pytest.raises(ValidationError, match=message):
        SendWindow.model_validate(window)


@pytest.mark.parametrize("given_at, utc", [
    ("2026-11-23T10:00:00+02:00", datetime(2026, 11, 23, 8, 0, tzinfo=UTC)),
    ("2026-11-23T08:00:00", datetime(2026, 11, 23, 8, 0, tzinfo=UTC)),  # no offset: UTC
])
def test_scheduled_at_is_kept_in_utc(given_at, utc):
    spec = CampaignSpec.model_validate({"from": "A", "message": "m", "scheduled_at": given_at})
    assert spec.scheduled_at == utc and spec.scheduled_at.utcoffset() == timedelta(0)
