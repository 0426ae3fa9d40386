"""The city's calendar: business days, office hours, and when a person can answer.

Why not a hand-written holiday table: Japanese public holidays move (equinoxes, substitute
holidays, one-off changes by law), so ``jpholiday`` supplies them. The year-end closure
(12/29–1/3) and other closure days come from config. Everything here takes the time as a
parameter: only the scheduler reads the clock, so tests can use any JST moment.

Why ``reply_expected`` knows the digest times: a non-urgent case reaches its partner only
through a digest (``[service] digest_times``, business days), so "a reply today" is a
promise the city can keep only for mail stored before the day's last digest that still
leaves time to answer; the office being open is not enough.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import jpholiday

YEAR_END_CLOSURE = ("12-29", "12-30", "12-31", "01-01", "01-02", "01-03")
WEEKDAYS_JA = "月火水木金土日"
SAME_DAY_MARGIN = timedelta(hours=1)  # less than this before closing: promise the next day
# [service] digest_times' default (intake.config): when partners see the new cases
DIGEST_TIMES = (time(9, 0), time(14, 0))
# a case stored less than this before a digest may miss it (fetch, commit, the job's start)
DIGEST_MARGIN = timedelta(minutes=5)


def parse_hhmm(value: str) -> time:
    """``"14:00"`` (as config and partners.toml write digest times) as a ``time``."""
    hour, minute = value.split(":")
    return time(int(hour), int(minute))


@dataclass(frozen=True)
class BusinessCalendar:
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Tokyo"))
    open: time = time(8, 30)
    close: time = time(16, 30)
    closures: tuple[str, ...] = YEAR_END_CLOSURE  # "MM-DD" every year or "YYYY-MM-DD" once
    digest_times: tuple[time, ...] = DIGEST_TIMES  # [service] digest_times

    def is_business_day(self, day: date) -> bool:
        if day.weekday() >= 5 or jpholiday.is_holiday(day):
            return False
        return day.strftime("%m-%d") not in self.closures and day.isoformat() not in self.closures

    def is_open(self, moment: datetime) -> bool:
        local = moment.astimezone(self.tz)
        return self.is_business_day(local.date()) and self.open <= local.time() < self.close

    def next_opening(self, moment: datetime) -> datetime:
        """The next moment the office opens, strictly after ``moment``'s day if it is closed."""
        local = moment.astimezone(self.tz)
        day = local.date()
        if self.is_business_day(day) and local.time() < self.open:
            return datetime.combine(day, self.open, self.tz)
        day += timedelta(days=1)
        while not self.is_business_day(day):
            day += timedelta(days=1)
        return datetime.combine(day, self.open, self.tz)

    def reply_expected(
        self, received: datetime, digest_times: Sequence[time] | None = None
    ) -> tuple[datetime, bool]:
        """When staff can first answer a mail received (or stored) at ``received``.

        Returns (deadline, same_day). ``digest_times`` are those of the partner that owns
        the case (default: the calendar's, i.e. ``[service] digest_times``). Same day, by
        today's closing time, only during office hours and when a digest still to come
        today carries the case (at least ``DIGEST_MARGIN`` away) with an hour left to
        answer it: a mail at 14:30 after the 14:00 digest reaches its partner tomorrow
        morning, so promising "today" would be a promise broken. Otherwise: by noon of the
        next business day (never "in a minute" at 23:00 nor "by 17:00" at 16:59), or by
        that day's closing when no digest comes early enough for noon.
        """
        local = received.astimezone(self.tz)
        times = sorted(self.digest_times if digest_times is None else digest_times)
        closing = datetime.combine(local.date(), self.close, self.tz)
        if self.is_open(received):
            for at in times:
                digest = datetime.combine(local.date(), at, self.tz)
                if digest - local >= DIGEST_MARGIN and closing - digest >= SAME_DAY_MARGIN:
                    return closing, True
        opening = self.next_opening(received)
        noon = opening.replace(hour=12, minute=0)
        digests = [datetime.combine(opening.date(), at, self.tz) for at in times]
        first = next((d for d in digests if d - local >= DIGEST_MARGIN), None)
        if first is None or noon - first >= SAME_DAY_MARGIN:
            return noon, False
        return datetime.combine(opening.date(), self.close, self.tz), False


def format_day_ja(moment: datetime) -> str:
    """``11月27日(金)`` — how Japanese mail names a day."""
    return f"{moment.month}月{moment.day}日({WEEKDAYS_JA[moment.weekday()]})"


def format_date_ja(moment: datetime) -> str:
    """``11月27日`` — the day without the weekday, for 「本日（11月27日）」."""
    return f"{moment.month}月{moment.day}日"


def format_time_ja(moment: time | datetime) -> str:
    """``16時30分``, ``9時``: a time as a teenager reads it, not ``16:30``."""
    return f"{moment.hour}時{moment.minute:02d}分" if moment.minute else f"{moment.hour}時"


def office_hours_ja(calendar: BusinessCalendar) -> str:
    """``8時30分〜16時30分``: the configured office hours in resident words."""
    return f"{format_time_ja(calendar.open)}〜{format_time_ja(calendar.close)}"
