"""`run --start-at TIME`: when a run should start, as an aware date-time. Pure.

Accepted (CONTRACT-style: anything else is refused with one sentence):
- a clock time `HH:MM` or `HH:MM:SS` (24-hour, local time): today, or tomorrow if that
  moment has already passed (so `--start-at 02:00` late in the evening means tonight);
- an ISO-8601 date-time (`2026-12-02T14:30`, `...:15Z`, `...+01:00`); without an offset
  it is local time; one in the past is refused, not run at once;
- a delay, as a duration (`90s`, `10m`, `2h`; units.parse_duration).
Nothing further ahead than units.MAX_SECONDS (a month): a typo, not a plan.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta, tzinfo

from ..text import one_line
from ..units import MAX_SECONDS, parse_duration

MAX_TEXT = 64  # the longest accepted spelling is ~32 characters
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")  # a date AND a time
_HELP = "a clock time (14:30, 14:30:15), an ISO-8601 date-time or a delay (90s, 10m, 2h)"


class StartAtError(ValueError):
    """The text is not a start time; the message is one sentence for the user."""


def parse_start_at(text: str, now: datetime, tz: tzinfo | None = None) -> datetime:
    """The moment `text` names, seen at `now` (aware). `tz`: the zone of clock times and
    of ISO times without an offset; None is the system's local zone (with its DST rules,
    so `tomorrow 14:30` across a DST change is still 14:30)."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware date-time")
    return _parse(text, now, tz).astimezone(UTC)  # UTC: differences are real durations


def _parse(text: str, now: datetime, tz: tzinfo | None) -> datetime:
    value = text.strip()
    if not value or len(value) > MAX_TEXT:
        raise StartAtError(f"{one_line(text[:MAX_TEXT])!r} is not {_HELP}")
    clock = _CLOCK.match(value)
    if clock:
        return _next_clock_time(clock, now, tz)
    if _ISO.match(value):
        return _date_time(value, now, tz)
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise StartAtError(f"{one_line(value)!r} is not {_HELP}") from None
    return now + timedelta(seconds=seconds)


def _next_clock_time(match: re.Match[str], now: datetime, tz: tzinfo | None) -> datetime:
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise StartAtError(f"{match[0]!r} is not a clock time (00:00 to 23:59:59)")
    local_now = _in_zone(now, tz)
    day = local_now.date()
    for _ in range(2):
        target = _localise(datetime.combine(day, time(hour, minute, second)), tz)
        if target > now:
            return target
        day += timedelta(days=1)
    raise StartAtError(f"{match[0]!r} cannot be placed after now")  # not reachable


def _date_time(value: str, now: datetime, tz: tzinfo | None) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise StartAtError(f"{one_line(value)!r} is not an ISO-8601 date-time") from None
    target = parsed if parsed.tzinfo is not None else _localise(parsed, tz)
    if target <= now:
        raise StartAtError(f"{one_line(value)!r} is in the past")
    if (target - now).total_seconds() > MAX_SECONDS:
        raise StartAtError(f"{one_line(value)!r} is more than {MAX_SECONDS / 86400:g} days ahead")
    return target


def _in_zone(moment: datetime, tz: tzinfo | None) -> datetime:
    return moment.astimezone(tz) if tz is not None else moment.astimezone()


def _localise(naive: datetime, tz: tzinfo | None) -> datetime:
    # A naive date-time's astimezone() reads it as system local time (mktime: DST-aware).
    return naive.replace(tzinfo=tz) if tz is not None else naive.astimezone()
