"""Scheduling on the city's calendar, with the clock passed in."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from intake.config import OncallSettings, load_settings
from intake.pipeline import Service
from intake.worker import digest_job, schedule_jobs

JST = ZoneInfo("Asia/Tokyo")

CONFIG = """
[mailbox]
host = "127.0.0.1"
port = 1
security = "plain"
username = "u"
password_env = "UNUSED"

[smtp]
host = "127.0.0.1"
port = 1
security = "plain"
from_address = "sasaean@city.kasaoka.okayama.jp"
timeout = 1

[database]
url = "sqlite:///{db}"

[oncall]
to = ["oncall@example.jp"]
"""


@pytest.fixture
def svc(tmp_path: Path) -> Service:
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(db=(tmp_path / "x.db").as_posix()), encoding="utf-8")
    return Service.from_settings(load_settings(config))


def test_digests_are_scheduled_at_9_and_14_on_weekdays(svc: Service) -> None:
    scheduler = BackgroundScheduler(timezone=JST)
    schedule_jobs(svc, scheduler)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert {"digest-09:00", "digest-14:00", "outbox", "escalate", "purge"} <= set(jobs)
    saturday = datetime(2026, 11, 28, 10, 0, tzinfo=JST)
    fire = jobs["digest-09:00"].trigger.get_next_fire_time(None, saturday)
    assert fire == datetime(2026, 11, 30, 9, 0, tzinfo=JST)  # Monday
    fire = jobs["digest-14:00"].trigger.get_next_fire_time(
        None, datetime(2026, 11, 26, 9, 1, tzinfo=JST)
    )
    assert fire == datetime(2026, 11, 26, 14, 0, tzinfo=JST)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 23, 9, 0, tzinfo=JST),  # 勤労感謝の日 (a Monday: cron fires)
        datetime(2026, 12, 29, 9, 0, tzinfo=JST),  # year-end closure
        datetime(2026, 5, 6, 14, 0, tzinfo=JST),  # substitute holiday in Golden Week
    ],
)
def test_digest_job_skips_holidays_and_closures(svc: Service, moment: datetime) -> None:
    assert digest_job(svc, moment) == {}


def test_off_hours_recipients_are_added_only_outside_office_hours() -> None:
    oncall = OncallSettings(
        to=("desk@example.jp",), off_hours=("night@example.jp", "DESK@example.jp")
    )
    assert oncall.alert_recipients(office_open=True) == ["desk@example.jp"]
    assert oncall.alert_recipients(office_open=False) == ["desk@example.jp", "night@example.jp"]


def test_a_partner_with_its_own_digest_time_is_only_sent_then(svc: Service, tmp_path: Path) -> None:
    from dataclasses import replace

    harmony = svc.directory.get("harmony")
    assert harmony is not None
    partners = tuple(
        replace(p, digest_times=("11:30",)) if p.id == "harmony" else p
        for p in svc.directory.partners
    )
    svc.directory = replace(svc.directory, partners=partners)
    scheduler = BackgroundScheduler(timezone=JST)
    schedule_jobs(svc, scheduler)
    assert "digest-11:30" in {job.id for job in scheduler.get_jobs()}
    from intake.digest import digest_times

    assert digest_times(svc, partners[1]) == ("11:30",)
    assert digest_times(svc, partners[0]) == ("09:00", "14:00")
