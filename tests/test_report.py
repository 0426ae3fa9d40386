"""The monthly report: JST month boundaries, new vs returning senders, medians, no personal data."""

from __future__ import annotations

import json
import struct
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from intake.errors import ConfigError
from intake.escalate import ACK_EVENT, CALLBACK_DONE, add_event
from intake.pipeline import Service
from intake.report import (
    SALT_ENV,
    Durations,
    bar_chart_png,
    monthly_report,
    sender_hash,
    sender_salt,
    write_report,
)
from intake.store import Case, Outbox, StoredMessage, session_scope
from tests.helpers import offline_service

JST = ZoneInfo("Asia/Tokyo")


def seed(
    svc: Service,
    received: datetime,
    sender: str,
    *,
    topic: str = "isolation",
    partner: str = "city",
    ack_after: timedelta | None = timedelta(minutes=2),
    urgent: bool = False,
    alert_ack_after: timedelta | None = None,
    callback_after: timedelta | None = None,
    phone: str = "090-0000-1234",
) -> int:
    """A case as the pipeline and staff leave it: message, ack mail, alert and events."""
    at = received.astimezone(UTC)
    with session_scope(svc.engine) as session:
        case = Case(
            mailbox=svc.settings.mailbox.key,
            created_at=at,
            sender=sender,
            topic=topic,
            partner=partner,
            urgent=urgent,
            phone=json.dumps([phone]),
            ack_state="sent" if ack_after else "queued",
            urgent_reasons=json.dumps([{"surface": "消えたい", "rule": "u1"}]),
        )
        session.add(case)
        session.flush()
        cid = case.id
        session.add(
            StoredMessage(
                mailbox=svc.settings.mailbox.key,
                sha256=f"h{cid}",
                raw=b"From: x",
                received_at=at,
                from_addr=sender,
                subject="件名ひみつ",
                body="本文ひみつ",
                new_text="本文ひみつ",
                status="processed",
                case_id=cid,
            )
        )
        session.add(
            Outbox(
                mailbox=svc.settings.mailbox.key,
                kind="ack",
                dedupe_key=f"ack:case:{cid}",
                case_id=cid,
                recipients=json.dumps([sender]),
                message_id=f"<ack{cid}@x>",
                content=f"To: {sender}\r\n\r\n本文".encode(),
                created_at=at,
                next_attempt_at=at,
                status="sent" if ack_after else "queued",
                sent_at=at + ack_after if ack_after else None,
            )
        )
        if urgent:
            session.add(
                Outbox(
                    mailbox=svc.settings.mailbox.key,
                    kind="alert",
                    priority=0,
                    dedupe_key=f"alert:message:{cid}",
                    case_id=cid,
                    recipients='["oncall@example.jp"]',
                    message_id=f"<al{cid}@x>",
                    content=b"alert",
                    created_at=at,
                    next_attempt_at=at,
                    status="sent",
                    sent_at=at,
                )
            )
        if alert_ack_after is not None:
            add_event(session, ACK_EVENT, cid, "", "oncall@example.jp", at + alert_ack_after)
        if callback_after is not None:
            add_event(session, CALLBACK_DONE, cid, "", "tanaka", at + callback_after)
        assert cid is not None
        return cid


def png_chunk_types(png: bytes) -> list[bytes]:
    kinds, pos = [], 8
    while pos < len(png):
        length = struct.unpack(">I", png[pos : pos + 4])[0]
        kinds.append(png[pos + 4 : pos + 8])
        pos += 12 + length
    return kinds


@pytest.fixture
def svc(tmp_path: Path) -> Service:
    return offline_service(tmp_path)


def test_cases_are_counted_by_the_japan_month_they_arrived(svc: Service) -> None:
    seed(svc, datetime(2026, 11, 1, 0, 10, tzinfo=JST), "a@example.jp")  # Oct 31 in UTC
    seed(svc, datetime(2026, 11, 30, 23, 50, tzinfo=JST), "b@example.jp")
    seed(svc, datetime(2026, 12, 1, 0, 5, tzinfo=JST), "c@example.jp")  # Nov 30 in UTC
    seed(svc, datetime(2026, 10, 31, 23, 59, tzinfo=JST), "d@example.jp")
    assert monthly_report(svc, "2026-11").cases == 2
    assert monthly_report(svc, "2026-12").cases == 1
    assert monthly_report(svc, "2026-10").cases == 1


def test_december_report_ends_at_new_year_in_japan(svc: Service) -> None:
    seed(svc, datetime(2026, 12, 31, 23, 59, tzinfo=JST), "a@example.jp")
    seed(svc, datetime(2027, 1, 1, 0, 0, tzinfo=JST), "b@example.jp")
    assert monthly_report(svc, "2026-12").cases == 1
    assert monthly_report(svc, "2027-01").cases == 1


def test_counts_by_topic_and_partner(svc: Service) -> None:
    day = datetime(2026, 11, 10, 10, 0, tzinfo=JST)
    seed(svc, day, "a@example.jp", topic="poverty", partner="genki")
    seed(svc, day, "b@example.jp", topic="poverty", partner="genki")
    seed(svc, day, "c@example.jp", topic="bullying", partner="harmony")
    report = monthly_report(svc, "2026-11")
    assert report.by_topic == (("poverty", 2), ("bullying", 1))
    assert report.by_partner == (("genki", 2), ("harmony", 1))


def test_new_and_returning_senders_are_people_not_cases(svc: Service) -> None:
    seed(svc, datetime(2026, 10, 5, 10, 0, tzinfo=JST), "back@example.jp")
    seed(svc, datetime(2026, 11, 5, 10, 0, tzinfo=JST), "Back@Example.JP")  # same person
    seed(svc, datetime(2026, 11, 6, 10, 0, tzinfo=JST), "first@example.jp")
    seed(svc, datetime(2026, 11, 20, 10, 0, tzinfo=JST), "first@example.jp")  # twice this month
    seed(svc, datetime(2026, 11, 21, 10, 0, tzinfo=JST), "")  # quarantined, unreadable sender
    report = monthly_report(svc, "2026-11")
    assert (report.new_senders, report.returning_senders, report.unknown_senders) == (1, 1, 1)
    assert report.cases == 4


def test_median_times_to_ack_alert_ack_and_callback(svc: Service) -> None:
    day = datetime(2026, 11, 10, 22, 0, tzinfo=JST)
    seed(
        svc,
        day,
        "a@example.jp",
        ack_after=timedelta(minutes=1),
        urgent=True,
        alert_ack_after=timedelta(minutes=10),
        callback_after=timedelta(hours=11),
    )
    seed(
        svc,
        day,
        "b@example.jp",
        ack_after=timedelta(minutes=3),
        urgent=True,
        alert_ack_after=timedelta(minutes=50),
    )
    seed(svc, day, "c@example.jp", ack_after=timedelta(minutes=8))
    seed(svc, day, "d@example.jp", ack_after=None)  # not sent yet: not in the median
    report = monthly_report(svc, "2026-11")
    assert report.ack == Durations(3, 3.0)
    assert report.alert_ack == Durations(2, 30.0)
    assert report.callback == Durations(1, 660.0)
    assert report.urgent == 2


def test_a_month_without_cases_has_no_medians(svc: Service) -> None:
    report = monthly_report(svc, "2026-02")
    assert report.cases == 0 and report.ack == Durations(0, None)


def test_a_malformed_month_is_a_clear_error(svc: Service) -> None:
    with pytest.raises(ConfigError, match="YYYY-MM"):
        monthly_report(svc, "November")


def test_written_report_holds_no_personal_data(svc: Service, tmp_path: Path) -> None:
    day = datetime(2026, 11, 10, 10, 0, tzinfo=JST)
    seed(svc, day, "hanako.private@example.jp", urgent=True, alert_ack_after=timedelta(5))
    seed(svc, day, "taro@example.jp", phone="080-9999-0000")
    paths = write_report(monthly_report(svc, "2026-11"), tmp_path / "out", svc.directory)
    assert [p.suffix for p in paths] == [".md", ".html", ".png"]
    for path in paths[:2]:
        data = path.read_bytes()
        for secret in (
            b"@",
            b"hanako",
            b"taro",
            "本文ひみつ".encode(),
            "件名ひみつ".encode(),
            b"9999",
            "消えたい".encode(),
        ):
            assert secret not in data, (path.name, secret)
    assert png_chunk_types(paths[2].read_bytes()) == [b"IHDR", b"IDAT", b"IEND"]  # no text
    md = paths[0].read_text(encoding="utf-8")
    assert "| 受付件数 | 2 |" in md and "| うち緊急 | 1 |" in md
    city = svc.directory.get("city")
    assert city is not None and f"| {city.name} | 2 |" in md and "| 孤独・孤立 | 2 |" in md
    assert "report-2026-11.png" in md


def test_chart_is_a_valid_png_whose_bars_follow_the_counts(svc: Service) -> None:
    day = datetime(2026, 11, 10, 10, 0, tzinfo=JST)
    seed(svc, day, "a@example.jp")
    one = bar_chart_png(monthly_report(svc, "2026-11"))
    seed(svc, day, "b@example.jp", topic="poverty")
    two = bar_chart_png(monthly_report(svc, "2026-11"))
    assert one.startswith(b"\x89PNG\r\n\x1a\n") and two != one
    width, height = struct.unpack(">II", two[16:24])
    idat_len = struct.unpack(">I", two[33:37])[0]
    raw = zlib.decompress(two[41 : 41 + idat_len])
    assert len(raw) == height * (1 + width * 3)
    assert bar_chart_png(monthly_report(svc, "2026-11")) == two, "deterministic"


def test_sender_key_file_is_made_once_beside_the_database_and_private(
    svc: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SALT_ENV, raising=False)
    key = sender_salt(svc.settings)
    path = tmp_path / "sender-salt"
    assert path.stat().st_mode & 0o777 == 0o600
    assert sender_salt(svc.settings) == key
    assert sender_hash("A@example.jp", key) == sender_hash("a@example.jp", key)
    assert sender_hash("a@example.jp", key) != sender_hash("a@example.jp", b"other")
    monkeypatch.setenv(SALT_ENV, "from-env")
    assert sender_salt(svc.settings) == b"from-env"


def test_report_command_writes_the_files(
    svc: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from intake.staff import add_commands

    seed(svc, datetime(2026, 11, 10, 10, 0, tzinfo=JST), "a@example.jp")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "report",
            "--month",
            "2026-11",
            "--out",
            str(tmp_path / "r"),
            "--config",
            str(tmp_path / "intake.toml"),
        ]
    )
    assert args.func(args) == 0
    assert (tmp_path / "r" / "report-2026-11.md").exists()
    assert "report-2026-11.png" in capsys.readouterr().out


def test_sender_key_file_named_in_the_config_is_relative_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SALT_ENV, raising=False)
    svc = offline_service(tmp_path, extra='\n[report]\nsalt_file = "keys/report-salt"\n')
    assert svc.settings.salt_file == tmp_path / "keys" / "report-salt"
    key = sender_salt(svc.settings)
    assert (tmp_path / "keys" / "report-salt").read_text(encoding="ascii").strip().encode() == key
    assert not (tmp_path / "sender-salt").exists()


def test_mail_kept_for_staff_is_not_counted_as_a_consultation(svc: Service) -> None:
    day = datetime(2026, 11, 10, 10, 0, tzinfo=JST)
    seed(svc, day, "a@example.jp", topic="poverty", partner="genki")
    kept = seed(svc, day, "oncall@example.jp", topic="other", partner="city")
    forwarded = seed(svc, day, "genki@example.jp", topic="other", partner="city", urgent=True)
    with session_scope(svc.engine) as session:
        for case_id in (kept, forwarded):
            case = session.get(Case, case_id)
            assert case is not None
            case.ack_state = "suppressed:staff-address"
    report = monthly_report(svc, "2026-11")
    assert sorted(report.by_topic) == [("other", 1), ("poverty", 1)]  # the urgent one counts
