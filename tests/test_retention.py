"""Retention: old mail content goes, the anonymised figures stay, the report does not change."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select

from intake.config import load_settings
from intake.errors import ConfigError
from intake.escalate import ACK_EVENT, CALLBACK_DONE, add_event
from intake.pipeline import Service
from intake.report import monthly_report, write_report
from intake.retention import DEFAULT_KEEP_DAYS, purge, retention_days
from intake.staff import CaseNote, add_commands, close_case, show_case
from intake.store import Case, Outbox, StoredMessage, session_scope
from tests.helpers import offline_service

JST = ZoneInfo("Asia/Tokyo")
NOW = datetime(2027, 12, 15, 9, 0, tzinfo=JST)
OLD = datetime(2026, 11, 10, 22, 0, tzinfo=JST)  # more than a year before NOW
RECENT = datetime(2027, 12, 1, 10, 0, tzinfo=JST)


def seed(
    svc: Service,
    received: datetime,
    sender: str,
    *,
    urgent: bool = False,
    topic: str = "isolation",
    status: str = "sent",
) -> int:
    at = received.astimezone(UTC)
    with session_scope(svc.engine) as session:
        case = Case(
            mailbox=svc.settings.mailbox.key,
            created_at=at,
            sender=sender,
            topic=topic,
            urgent=urgent,
            ack_state="sent",
            phone=json.dumps(["090-1111-2222"]),
            urgent_reasons=json.dumps(
                [{"surface": "消えたい", "rule": "u1", "kind": "urgent"}] if urgent else []
            ),
            matches=json.dumps([{"surface": "寂しい", "rule": "t1", "topic": topic}]),
        )
        session.add(case)
        session.flush()
        cid = case.id
        session.add(
            StoredMessage(
                mailbox=svc.settings.mailbox.key,
                sha256=f"h{cid}",
                raw=b"From: x\r\n\r\nsecret",
                received_at=at,
                from_addr=sender,
                subject="件名",
                message_id=f"<m{cid}@example.jp>",
                body="本文です",
                new_text="本文です",
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
                content=b"rendered ack",
                created_at=at,
                next_attempt_at=at,
                status=status,
                sent_at=at + timedelta(minutes=3),
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
            add_event(session, ACK_EVENT, cid, "", "oncall@example.jp", at + timedelta(minutes=7))
            add_event(session, CALLBACK_DONE, cid, "", "tanaka", at + timedelta(hours=11))
        assert cid is not None
        return cid


@pytest.fixture
def svc(tmp_path: Path) -> Service:
    return offline_service(tmp_path)


def test_purge_blanks_old_mail_content_and_keeps_recent_mail(svc: Service) -> None:
    old = seed(svc, OLD, "old@example.jp", urgent=True)
    new = seed(svc, RECENT, "new@example.jp")
    assert purge(svc, NOW, DEFAULT_KEEP_DAYS) == 1
    with Session(svc.engine) as session:
        old_msg = session.exec(select(StoredMessage).where(StoredMessage.case_id == old)).one()
        new_msg = session.exec(select(StoredMessage).where(StoredMessage.case_id == new)).one()
        old_case, new_case = session.get(Case, old), session.get(Case, new)
        old_ack = session.exec(select(Outbox).where(Outbox.dedupe_key == f"ack:case:{old}")).one()
    assert old_msg.raw is None and old_msg.message_id is None
    assert (old_msg.subject, old_msg.body, old_msg.new_text, old_msg.from_addr) == ("", "", "", "")
    assert old_msg.sha256 == f"h{old}"  # still recognised if fetched again
    assert old_case is not None and old_case.sender == "" and old_case.phone == "[]"
    assert "消えたい" not in old_case.urgent_reasons and '"u1"' in old_case.urgent_reasons
    assert "寂しい" not in old_case.matches
    assert (old_case.topic, old_case.urgent) == ("isolation", True)
    assert old_ack.content == b"" and old_ack.recipients == "[]"
    assert new_msg.raw is not None and new_msg.body == "本文です"
    assert new_case is not None and new_case.sender == "new@example.jp"


def test_purging_twice_purges_nothing_more(svc: Service) -> None:
    seed(svc, OLD, "old@example.jp")
    assert purge(svc, NOW, 30) == 1
    assert purge(svc, NOW, 30) == 0


def test_the_monthly_report_is_identical_before_and_after_purge(
    svc: Service, tmp_path: Path
) -> None:
    seed(svc, datetime(2026, 10, 3, 9, 0, tzinfo=JST), "back@example.jp")
    seed(svc, OLD, "back@example.jp", urgent=True)
    seed(svc, OLD + timedelta(days=1), "first@example.jp", topic="poverty")
    seed(svc, OLD + timedelta(days=2), "", topic="other")
    before = monthly_report(svc, "2026-11")
    before_files = [p.read_bytes() for p in write_report(before, tmp_path / "before")]
    assert (before.new_senders, before.returning_senders) == (1, 1)
    assert before.alert_ack.count == 1 and before.callback.count == 1 and before.ack.count == 3
    assert purge(svc, NOW, DEFAULT_KEEP_DAYS) == 4
    with Session(svc.engine) as session:
        assert all(c.sender == "" for c in session.exec(select(Case)))
    after = monthly_report(svc, "2026-11")
    after_files = [p.read_bytes() for p in write_report(after, tmp_path / "after")]
    assert after == before
    assert after_files == before_files


def test_a_returning_sender_is_still_recognised_after_the_first_case_was_purged(
    svc: Service,
) -> None:
    seed(svc, OLD, "again@example.jp")
    purge(svc, NOW, DEFAULT_KEEP_DAYS)
    seed(svc, RECENT, "again@example.jp")
    report = monthly_report(svc, "2027-12")
    assert (report.new_senders, report.returning_senders) == (0, 1)


def test_a_case_with_a_recent_follow_up_keeps_its_sender(svc: Service) -> None:
    cid = seed(svc, OLD, "ongoing@example.jp")
    with session_scope(svc.engine) as session:
        session.add(
            StoredMessage(
                mailbox=svc.settings.mailbox.key,
                sha256="follow",
                raw=b"x",
                received_at=RECENT.astimezone(UTC),
                from_addr="ongoing@example.jp",
                body="続き",
                status="processed",
                case_id=cid,
                is_followup=True,
            )
        )
    assert purge(svc, NOW, DEFAULT_KEEP_DAYS) == 1
    with Session(svc.engine) as session:
        case = session.get(Case, cid)
    assert case is not None and case.sender == "ongoing@example.jp"


def test_queued_mail_is_never_purged(svc: Service) -> None:
    seed(svc, OLD, "slow@example.jp", status="queued")
    purge(svc, NOW, DEFAULT_KEEP_DAYS)
    with Session(svc.engine) as session:
        row = session.exec(select(Outbox)).one()
    assert row.content == b"rendered ack"


def test_staff_notes_of_old_cases_are_removed_but_the_audit_stays(svc: Service) -> None:
    seed(svc, OLD, "n@example.jp")
    close_case(svc, "C000001", "電話 090-1111-2222 で話した", "tanaka", OLD + timedelta(days=1))
    purge(svc, NOW, DEFAULT_KEEP_DAYS)
    with Session(svc.engine) as session:
        assert session.exec(select(CaseNote)).one().text == ""
    shown = show_case(svc, "C000001")
    assert "090-1111-2222" not in shown and "本文です" not in shown
    assert "削除済み" in shown and "tanaka" in shown and "closed" in shown


def test_keep_days_comes_from_the_config(tmp_path: Path) -> None:
    svc = offline_service(tmp_path, extra="\n[retention]\nkeep_days = 90\n")
    assert retention_days(svc.settings) == 90
    (tmp_path / "intake.toml").write_text(
        (tmp_path / "intake.toml").read_text(encoding="utf-8").replace("= 90", "= 0"),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"retention\.keep_days"):
        load_settings(tmp_path / "intake.toml")


def test_purge_command_uses_days(
    svc: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(svc, datetime.now(JST) - timedelta(days=40), "a@example.jp")
    seed(svc, datetime.now(JST) - timedelta(days=10), "b@example.jp")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["purge", "--days", "30", "--config", str(tmp_path / "intake.toml")])
    assert args.func(args) == 0
    assert "purged 1 message(s) older than 30 days" in capsys.readouterr().out
