"""`run --start-at`: parsing clock times, ISO date-times and delays (pure, a fixed `now`),
and the countdown wait on a fake clock (no real sleeps)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from sandbox_orch.timing.countdown import RECHECK_S, SystemClock, format_left, wait_until
from sandbox_orch.timing.pacing import StartPacer
from sandbox_orch.timing.startat import StartAtError, parse_start_at

PLUS2 = timezone(timedelta(hours=2))
NOW = datetime(2026, 12, 1, 14, 0, 0, tzinfo=PLUS2)  # 14:00 local, 12:00 UTC


def at(text: str, now: datetime = NOW, tz=PLUS2) -> datetime:
    return parse_start_at(text, now, tz)


# --- clock times -------------------------------------------------------------------------


def test_a_clock_time_later_today_is_today():
    assert at("14:30") == datetime(2026, 12, 1, 14, 30, tzinfo=PLUS2)
    assert at("9:05:07", NOW.replace(hour=8)) == datetime(2026, 12, 1, 9, 5, 7, tzinfo=PLUS2)
    assert at("23:59:59") == datetime(2026, 12, 1, 23, 59, 59, tzinfo=PLUS2)


def test_a_clock_time_already_past_is_tomorrow():
    assert at("13:59") == datetime(2026, 12, 2, 13, 59, tzinfo=PLUS2)
    assert at("00:00") == datetime(2026, 12, 2, 0, 0, tzinfo=PLUS2)


def test_the_current_minute_is_tomorrow_never_now():
    assert at("14:00") == datetime(2026, 12, 2, 14, 0, tzinfo=PLUS2)
    assert at("14:00:00") == datetime(2026, 12, 2, 14, 0, tzinfo=PLUS2)


def test_a_clock_time_is_read_in_the_given_zone_not_the_zone_of_now():
    now_utc = NOW.astimezone(UTC)  # 12:00 UTC is 14:00 in the zone
    assert at("14:30", now_utc) == datetime(2026, 12, 1, 14, 30, tzinfo=PLUS2)
    assert at("13:00", now_utc) == datetime(2026, 12, 2, 13, 0, tzinfo=PLUS2)


def test_tomorrow_across_a_dst_change_keeps_the_wall_clock_time():
    berlin = ZoneInfo("Europe/Berlin")
    evening = datetime(2026, 3, 28, 20, 0, tzinfo=berlin)  # the night clocks go forward
    target = parse_start_at("14:30", evening, berlin)
    assert target.astimezone(berlin).replace(tzinfo=None) == datetime(2026, 3, 29, 14, 30)
    assert target.astimezone(berlin).utcoffset() == timedelta(hours=2)
    assert target - evening == timedelta(hours=17, minutes=30)  # one hour less than usual


def test_the_system_zone_is_used_when_none_is_given():
    now = datetime.now(UTC)
    target = parse_start_at("12:00", now)
    assert target.astimezone().strftime("%H:%M:%S") == "12:00:00"
    assert timedelta(0) < target - now <= timedelta(hours=25)


@pytest.mark.parametrize("text", ["24:00", "14:60", "14:30:60", "99:99", "1:2", "14:3"])
def test_impossible_clock_times_are_refused(text):
    with pytest.raises(StartAtError):
        at(text)


# --- ISO-8601 ----------------------------------------------------------------------------


def test_iso_date_times_with_an_offset_or_z_are_taken_as_written():
    assert at("2026-12-02T09:00:00Z") == datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    assert at("2026-12-01T15:00+01:00") == datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
    assert at("2026-12-01 16:45:10+02:00") == datetime(2026, 12, 1, 16, 45, 10, tzinfo=PLUS2)


def test_an_iso_date_time_without_an_offset_is_local_time():
    assert at("2026-12-01T18:00") == datetime(2026, 12, 1, 18, 0, tzinfo=PLUS2)


@pytest.mark.parametrize(
    "text", ["2026-12-01T13:59", "2026-12-01T14:00:00+02:00", "2020-01-01T00:00Z"]
)
def test_an_iso_date_time_now_or_in_the_past_is_refused(text):
    with pytest.raises(StartAtError, match="in the past"):
        at(text)


def test_an_iso_date_time_more_than_a_month_ahead_is_refused():
    with pytest.raises(StartAtError, match="days ahead"):
        at("2027-06-01T00:00Z")


@pytest.mark.parametrize(
    "text", ["2026-12-02", "2026-13-01T10:00", "2026-12-01T25:00", "2026-12-01Tnoon"]
)
def test_a_date_alone_or_a_broken_date_time_is_refused(text):
    with pytest.raises(StartAtError):
        at(text)


# --- delays ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("10m", 600), ("2h", 7200), ("500ms", 0.5), (" 2h ", 7200)]
)
def test_a_delay_counts_from_now(text, seconds):
    assert at(text) == NOW + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text",
    ["90", "0s", "-5s", "2 h", "1h30m", "31d", "800h", "soon", "", "   ", "tomorrow", "14h30"],
)
def test_what_is_neither_a_time_nor_a_delay_is_refused(text):
    with pytest.raises(StartAtError):
        at(text)


def test_a_refusal_is_one_line_and_bounded():
    hostile = "14:00\n::error::x" + "y" * 10_000
    with pytest.raises(StartAtError) as refused:
        at(hostile)
    message = str(refused.value)
    assert "\n" not in message and "\\n" in message
    assert len(message) < 300


def test_now_must_be_aware():
    with pytest.raises(ValueError):
        parse_start_at("14:30", datetime(2026, 12, 1, 14, 0))


# --- the countdown -----------------------------------------------------------------------


class FakeClock:
    """Time passes only when waited for; `jump` moves the wall clock (NTP, a suspend)."""

    def __init__(self, start: datetime, stop_after: float | None = None) -> None:
        self.time = start
        self.waits: list[float] = []
        self.stop_after = stop_after  # set the stop event once this much time has passed
        self.jumps: dict[int, float] = {}  # on the n-th wait, jump this many seconds more
        self.elapsed = 0.0

    def now(self) -> datetime:
        return self.time

    async def wait(self, stop: asyncio.Event, seconds: float) -> bool:
        assert seconds >= 0
        self.waits.append(seconds)
        step = seconds
        if self.stop_after is not None and self.elapsed + step >= self.stop_after:
            step = self.stop_after - self.elapsed
            stop.set()
        self.elapsed += step
        self.time += timedelta(seconds=step + self.jumps.get(len(self.waits), 0.0))
        return stop.is_set()


def countdown(target_in: float, every, clock: FakeClock, stop=None):
    ticks: list[float] = []
    stop = stop or asyncio.Event()
    target = clock.now() + timedelta(seconds=target_in)

    async def go():
        return await wait_until(target, stop, ticks.append, every, clock)

    reached = asyncio.run(go())
    return reached, ticks


def test_the_countdown_ticks_at_once_then_at_each_interval_and_ends_on_time():
    clock = FakeClock(NOW)
    reached, ticks = countdown(150, 60, clock)
    assert reached
    assert ticks == [150, 90, 30]
    assert sum(clock.waits) == pytest.approx(150)
    assert clock.now() == NOW + timedelta(seconds=150)


def test_without_an_interval_it_ticks_once_and_still_rechecks_the_wall_clock():
    clock = FakeClock(NOW)
    reached, ticks = countdown(3600, None, clock)
    assert reached and ticks == [3600]
    assert max(clock.waits) <= RECHECK_S
    assert sum(clock.waits) == pytest.approx(3600)


def test_a_wall_clock_jump_forward_ends_the_wait_at_the_target_time():
    clock = FakeClock(NOW)
    clock.jumps = {1: 3000}  # the machine slept 50 minutes during the first wait
    reached, _ = countdown(3600, None, clock)
    assert reached
    assert sum(clock.waits) == pytest.approx(600)  # only what was left was waited


def test_an_interrupt_during_the_wait_ends_it_at_once():
    clock = FakeClock(NOW, stop_after=75)
    reached, ticks = countdown(3600, 60, clock)
    assert not reached
    assert ticks == [3600, 3540]
    assert clock.elapsed == pytest.approx(75)


def test_an_interrupt_before_the_wait_starts_nothing():
    clock = FakeClock(NOW)
    stop = asyncio.Event()
    stop.set()
    reached, ticks = countdown(60, 1, clock, stop)
    assert not reached and ticks == [] and clock.waits == []


def test_a_target_already_reached_ticks_zero_and_returns():
    clock = FakeClock(NOW)
    reached, ticks = countdown(0, 60, clock)
    assert reached and ticks == [0] and clock.waits == []


def test_the_system_clock_wait_is_the_stop_event():
    async def go():
        stop = asyncio.Event()
        stop.set()
        loop = asyncio.get_running_loop()
        began = loop.time()
        interrupted = await SystemClock().wait(stop, 3600)
        return interrupted, loop.time() - began

    interrupted, took = asyncio.run(go())
    assert interrupted and took < 1


def test_the_system_clock_wait_times_out_as_not_interrupted():
    async def go():
        return await SystemClock().wait(asyncio.Event(), 0)

    assert asyncio.run(go()) is False


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (0.2, "1s"), (59, "59s"), (59.1, "1m00s"), (61, "1m01s"), (3725.2, "1h02m06s")],
)
def test_time_left_is_shown_rounded_up(seconds, shown):
    assert format_left(seconds) == shown


# --- --stagger ---------------------------------------------------------------------------


def test_the_pacer_spaces_consecutive_starts_by_the_stagger():
    pacer = StartPacer(5.0)
    assert [pacer.reserve(100.0) for _ in range(4)] == [0.0, 5.0, 10.0, 15.0]


def test_the_pacer_never_delays_a_start_that_is_already_late():
    pacer = StartPacer(5.0)
    assert pacer.reserve(100.0) == 0.0
    assert pacer.reserve(130.0) == 0.0  # long after the last: at once
    assert pacer.reserve(131.0) == 4.0  # then 5s after that one


def test_the_pacer_refuses_a_negative_stagger():
    with pytest.raises(ValueError):
        StartPacer(-1)
