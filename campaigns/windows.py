"""Send windows in each recipient's local time: the rule as pure functions, and the two places
it holds messages back (fan-out's filter, the send path's check after a claim).

A window such as 09:00-20:00 is open at an instant when the local wall-clock time, in every time
zone that applies, is at or after ``start`` and before ``end`` (a window whose end is earlier than
its start runs across midnight). The zones are the campaign's fixed zone when it names one, or
else every zone phonenumbers gives for the number: a number that may be in several zones is sent
only in hours allowed in all of them.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as phone_zones
from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns import clock, db, messages
from campaigns.models import Message

# Far enough ahead to cross any DST change and any window; nothing found within it means never.
HORIZON = timedelta(days=8)
NEVER_OPEN = "the send window is never open in all of this number's time zones"


@dataclass(frozen=True)
class Window:
    start: time
    end: time
    timezone: str | None = None

    @classmethod
    def from_dict(cls, value: dict) -> Window:
        """From the stored form of :class:`campaigns.schema.SendWindow` (``{"start": "09:00", ...}``)."""
        return _parse(value["start"], value["end"], value.get("timezone"))

    def contains(self, local: time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


@lru_cache(maxsize=64)
def _parse(start: str, end: str, zone: str | None) -> Window:
    return Window(time.fromisoformat(start), time.fromisoformat(end), zone)


def zones_for(phone: str, window: Window) -> tuple[str, ...]:
    """The zones whose local time governs ``phone`` (E.164): the window's own zone, or the number's."""
    if window.timezone:
        return (window.timezone,)
    zones = phone_zones.time_zones_for_number(phonenumbers.parse(phone))
    # A number phonenumbers cannot place falls back to UTC rather than never being sent.
    return tuple(z for z in zones if z != phone_zones.UNKNOWN_TIMEZONE) or ("UTC",)


def is_open(window: Window, zones: tuple[str, ...], at: datetime) -> bool:
    return all(window.contains(at.astimezone(ZoneInfo(z)).time()) for z in zones)


def next_open(window: Window, zones: tuple[str, ...], after: datetime) -> datetime | None:
    """The earliest instant at or after ``after`` when the window is open in every zone, or None
    if it never is (the zones' windows do not overlap).

    The answer is ``after`` itself or the moment some zone's window opens, so only those
    candidates are tried; each is checked against every zone, so the result is never early.
    """
    if is_open(window, zones, after):
        return after
    for candidate in sorted(c for z in zones for c in _openings(window.start, z, after)):
        if is_open(window, zones, candidate):
            return candidate
    return None


def _openings(start: time, zone: str, after: datetime) -> list[datetime]:
    tz = ZoneInfo(zone)
    first = after.astimezone(tz).date() - timedelta(days=1)
    out = []
    for day in range(HORIZON.days + 2):
        opening = datetime.combine(first + timedelta(days=day), start, tzinfo=tz).astimezone(after.tzinfo)
        if after < opening <= after + HORIZON:
            out.append(opening)
    return out


def hold_outside_window(window: dict, ids: list[int], now: datetime | None = None,
                        s: Session | None = None) -> list[int]:
    """Fan-out's filter: of ``ids``, return those open now; the others wait with ``not_before`` set.
    With ``s``, in the caller's transaction (fan-out holds those rows already)."""
    now = now or clock.now()
    spec = Window.from_dict(window)
    with nullcontext(s) if s is not None else db.session() as s:
        by_zones: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for mid, phone in s.execute(select(Message.id, Message.phone).where(Message.id.in_(ids))):
            by_zones[zones_for(phone, spec)].append(mid)
        due: list[int] = []
        for zones, group in by_zones.items():
            at = next_open(spec, zones, now)
            if at is None:
                messages.fail_queued(s, group, NEVER_OPEN)
            elif at <= now:
                due.extend(group)
            else:
                messages.hold_until(s, group, at)
    return sorted(due)


def defer_if_closed(message_id: int, phone: str, window: dict, now: datetime | None = None) -> bool:
    """The send path's check before the claim: if the window is closed, the message waits for it."""
    now = now or clock.now()
    spec = Window.from_dict(window)
    zones = zones_for(phone, spec)
    if is_open(spec, zones, now):
        return False
    at = next_open(spec, zones, now)
    if at is None:
        with db.session() as s:
            messages.fail_queued(s, [message_id], NEVER_OPEN)
    else:
        messages.postpone(message_id, not_before=at)
    return True
