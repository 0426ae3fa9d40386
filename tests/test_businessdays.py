"""Business calendar: holidays from jpholiday, year-end closure, office hours (JST)."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from intake.businessdays import BusinessCalendar, format_day_ja

JST = ZoneInfo("Asia/Tokyo")
CAL = BusinessCalendar(open=time(8, 30), close=time(17, 0))


def jst(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=JST)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 11, 26), True),  # Thursday
        (date(2026, 11, 23), False),  # 勤労感謝の日
        (date(2026, 12, 31), False),  # year-end closure
        (date(2027, 1, 4), True),
        (date(2026, 5, 6), False),  # substitute holiday for 5/3 (Sunday)
        (date(2026, 11, 28), False),  # Saturday
    ],
)
def test_business_days(day: date, expected: bool) -> None:
    assert CAL.is_business_day(day) is expected


def test_mail_during_office_hours_is_answered_the_same_day() -> None:
    deadline, same_day = CAL.reply_expected(jst("2026-11-26 10:00"))
    assert same_day and deadline == jst("2026-11-26 17:00")


def test_mail_at_23h_is_answered_the_next_business_morning_not_in_a_minute() -> None:
    deadline, same_day = CAL.reply_expected(jst("2026-11-26 23:00"))
    assert not same_day and deadline == jst("2026-11-27 12:00")


def test_mail_on_new_years_eve_waits_for_the_first_business_day() -> None:
    deadline, _ = CAL.reply_expected(jst("2026-12-31 09:00"))
    assert deadline == jst("2027-01-04 12:00")


def test_golden_week_mail() -> None:
    deadline, _ = CAL.reply_expected(jst("2026-05-02 15:00"))
    assert deadline == jst("2026-05-07 12:00")


def test_extra_closure_days_from_config() -> None:
    cal = BusinessCalendar(closures=(*CAL.closures, "2026-11-27"))
    assert cal.next_opening(jst("2026-11-26 18:00")) == jst("2026-11-30 08:30")


def test_format_day_ja() -> None:
    assert format_day_ja(jst("2026-11-27 12:00")) == "11月27日(金)"


def test_mail_just_before_closing_is_promised_the_next_morning() -> None:
    deadline, same_day = CAL.reply_expected(jst("2026-11-26 16:30"))  # 17:00 close
    assert not same_day and deadline == jst("2026-11-27 12:00")


# --- the same-day promise follows the digests (review rvx finding 2) -------------------
# A non-urgent case reaches its partner only in a digest ([service] digest_times, default
# 09:00 and 14:00 on business days): "today" can be promised only before the last one.
CITY = BusinessCalendar()  # 08:30-16:30, digests at 09:00 and 14:00 (the config defaults)


def test_mail_after_the_last_digest_is_promised_the_next_business_day_not_today() -> None:
    deadline, same_day = CITY.reply_expected(jst("2026-11-25 14:30"))  # a Wednesday
    assert not same_day and deadline == jst("2026-11-26 12:00")


def test_mail_after_the_friday_afternoon_digest_is_promised_monday() -> None:
    deadline, same_day = CITY.reply_expected(jst("2026-11-27 14:01"))
    assert not same_day and deadline == jst("2026-11-30 12:00")


def test_mail_just_before_a_digest_may_miss_it_so_only_one_stored_in_time_is_promised_today() -> (
    None
):
    assert CITY.reply_expected(jst("2026-11-25 13:55")) == (jst("2026-11-25 16:30"), True)
    assert CITY.reply_expected(jst("2026-11-25 13:57")) == (jst("2026-11-26 12:00"), False)


def test_the_configured_digest_times_decide_the_promise() -> None:
    late = BusinessCalendar(digest_times=(time(9, 0), time(15, 0)))
    assert late.reply_expected(jst("2026-11-25 14:30")) == (jst("2026-11-25 16:30"), True)
    morning_only = BusinessCalendar(digest_times=(time(9, 0),))
    assert morning_only.reply_expected(jst("2026-11-25 10:00"))[1] is False


def test_the_owning_partners_digest_times_override_the_calendars() -> None:
    deadline, same_day = CITY.reply_expected(jst("2026-11-25 10:00"), [time(9, 0)])
    assert not same_day and deadline == jst("2026-11-26 12:00")


def test_a_digest_too_close_to_closing_leaves_no_time_to_answer_today() -> None:
    cal = BusinessCalendar(digest_times=(time(9, 0), time(16, 0)))
    assert cal.reply_expected(jst("2026-11-25 15:00"))[1] is False


def test_without_a_morning_digest_the_next_day_promise_is_its_closing_not_noon() -> None:
    cal = BusinessCalendar(digest_times=(time(14, 0),))
    deadline, same_day = cal.reply_expected(jst("2026-11-25 20:00"))
    assert not same_day and deadline == jst("2026-11-26 16:30")
