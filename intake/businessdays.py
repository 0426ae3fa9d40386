"""The city's calendar: business days, office hours, and when a person can answer.

Why not a hand-written holiday table: Japanese public holidays move (equinoxes, substitute
holidays, one-off changes by law), so ``jpholiday`` supplies them. The year-end closure
(12/29–1/3) and other closure days come from config. Everything here takes the time as a
parameter: only the scheduler reads the clock, so tests can use any JST moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import jpholiday

YEAR_END_CLOSURE = ("12-29", "12-30", "12-31", "01-01", "01-02", "01-03")
WEEKDAYS_JA = "月火水木金土日"
SAME_DAY_MARGIN = timedelta(hours=1)  # less than this before closing: promise the next day


@dataclass(frozen=True)
class BusinessCalendar:
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Tokyo"))
    open: time = time(8, 30)
    close: time = time(16, 30)
    closures: tuple[str, ...] = YEAR_END_CLOSURE  # "MM-DD" every year or "YYYY-MM-DD" once

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

    def reply_expected(self, received: datetime) -> tuple[datetime, bool]:
        """When staff can first answer a mail received at ``received``.

        Returns (deadline, same_day). During office hours with at least an hour left: by
        today's closing time. Otherwise: by noon of the next business day, never "in a
        minute" at 23:00 nor "by 17:00" at 16:59.
        """
        local = received.astimezone(self.tz)
        closing = datetime.combine(local.date(), self.close, self.tz)
        if self.is_open(received) and closing - local >= SAME_DAY_MARGIN:
            return closing, True
        opening = self.next_opening(received)
        return opening.replace(hour=12, minute=0), False


def format_day_ja(moment: datetime) -> str:
    """``11月27日(金)`` — how Japanese mail names a day."""
    return f"{moment.month}月{moment.day}日({WEEKDAYS_JA[moment.weekday()]})"
