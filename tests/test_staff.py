"""Staff commands on a temporary SQLite database: tables, filters, changes and their audit."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select

from intake.escalate import CaseNotFound
from intake.pipeline import Service
from intake.staff import (
    CaseFilter,
    CaseNote,
    StaffError,
    add_commands,
    close_case,
    display_width,
    format_cases,
    format_table,
    list_cases,
    reassign_case,
    record_callback,
    show_case,
    staff_actor,
)
from intake.store import Case, Event, Outbox, StoredMessage, session_scope
from tests.helpers import ONCALL, offline_service

JST = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=JST)


def seed(
    svc: Service,
    received: datetime,
    *,
    sender: str = "a@example.jp",
    topic: str = "isolation",
    partner: str = "city",
    urgent: bool = False,
    status: str = "new",
    text: str = "最近ひとりで寂しいです。",
) -> int:
    """A case with one message and a sent acknowledgement, as the pipeline leaves them."""
    at = received.astimezone(UTC)
    reasons = [{"surface": "死にたい", "rule": "u.die"}] if urgent else []
    with session_scope(svc.engine) as session:
        case = Case(
            mailbox=svc.settings.mailbox.key,
            created_at=at,
            sender=sender,
            topic=topic,
            partner=partner,
            urgent=urgent,
            status=status,
            ack_state="sent",
            urgent_reasons=json.dumps(reasons),
        )
        session.add(case)
        session.flush()
        session.add(
            StoredMessage(
                mailbox=svc.settings.mailbox.key,
                sha256=f"h{case.id}",
                raw=b"raw",
                received_at=at,
                from_addr=sender,
                subject="相談です",
                body=text,
                new_text=text,
                status="processed",
                case_id=case.id,
            )
        )
        session.add(
            Outbox(
                mailbox=svc.settings.mailbox.key,
                kind="ack",
                dedupe_key=f"ack:case:{case.id}",
                case_id=case.id,
                recipients=json.dumps([sender]),
                message_id=f"<ack{case.id}@x>",
                content=b"Subject: =?utf-8?b?5Y+X5LuY?=\r\n\r\nbody",
                created_at=at,
                next_attempt_at=at,
                status="sent",
                sent_at=at + timedelta(minutes=2),
            )
        )
        assert case.id is not None
        return case.id


@pytest.fixture
def svc(tmp_path: Path) -> Service:
    return offline_service(tmp_path)


def test_display_width_counts_full_width_characters_twice() -> None:
    assert display_width("受付番号") == 8
    assert display_width("C000001") == 7
    table = format_table(("受付番号", "状態"), [("C000001", "新規")]).splitlines()
    assert display_width(table[0].split("状態")[0]) == display_width(table[2].split("新規")[0])


def test_cases_table_has_the_japanese_labels_and_one_line_per_case(svc: Service) -> None:
    seed(svc, NOW - timedelta(hours=2), topic="bullying", urgent=True)
    seed(svc, NOW - timedelta(hours=1), topic="poverty", partner="genki")
    out = format_cases(svc, list_cases(svc))
    header = out.splitlines()[0].split()
    assert header == ["受付番号", "受信日時", "分類", "緊急", "担当", "状態", "返信"]
    lines = out.splitlines()
    assert lines[2].startswith("C000002") and "生活困窮" in lines[2]  # newest first
    assert "C000001" in lines[3] and "いじめ" in lines[3] and "緊急" in lines[3]
    assert "送信済み" in lines[3]
    assert lines[-1] == "2 件"


def test_cases_filters_by_status_topic_partner_and_urgency(svc: Service) -> None:
    seed(svc, NOW, topic="bullying", urgent=True)
    seed(svc, NOW, topic="poverty", partner="genki", status="closed")
    seed(svc, NOW, topic="poverty", partner="city")

    def numbers(**kw: object) -> list[str]:
        return sorted(r.number for r in list_cases(svc, CaseFilter(**kw)))  # type: ignore[arg-type]

    assert numbers(urgent=True) == ["C000001"]
    assert numbers(topic="poverty") == ["C000002", "C000003"]
    assert numbers(partner="genki") == ["C000002"]
    assert numbers(status="closed") == ["C000002"]
    assert numbers(topic="poverty", partner="city") == ["C000003"]


def test_date_range_is_in_japan_time(svc: Service) -> None:
    seed(svc, datetime(2026, 11, 30, 23, 30, tzinfo=JST))  # 14:30 UTC on the 30th
    seed(svc, datetime(2026, 12, 1, 0, 30, tzinfo=JST))  # still the 30th in UTC
    nov = list_cases(svc, CaseFilter(since=date(2026, 11, 1), until=date(2026, 11, 30)))
    dec = list_cases(svc, CaseFilter(since=date(2026, 12, 1)))
    assert [r.number for r in nov] == ["C000001"]
    assert [r.number for r in dec] == ["C000002"]


def test_empty_result_says_so(svc: Service) -> None:
    out = format_cases(svc, list_cases(svc, CaseFilter(urgent=True)))
    assert out == "該当する相談はありません。"


def test_show_has_messages_outgoing_mail_and_history(svc: Service) -> None:
    seed(svc, NOW, urgent=True, text="もう限界で死にたいです")
    close_case(svc, "C000001", "電話で話せた", "tanaka", NOW + timedelta(hours=1))
    out = show_case(svc, "C000001")
    assert "受付番号: C000001" in out
    assert "もう限界で死にたいです" in out  # staff read the consultation here
    assert "== 送信メール (1) ==" in out and "受付返信" in out and "受付" in out
    assert "終了" in out and "tanaka" in out and "電話で話せた" in out
    assert "折り返し期限: 2026-11-27 16:30" in out  # default closing: the city desk's 16:30


def test_close_records_actor_and_note_and_refuses_twice(svc: Service) -> None:
    seed(svc, NOW)
    event = close_case(svc, "c1", "解決", "suzuki", NOW)
    with Session(svc.engine) as session:
        case = session.get(Case, 1)
        note = session.exec(select(CaseNote)).one()
        stored = session.get(Event, event.id)
    assert case is not None and case.status == "closed"
    assert stored is not None and stored.actor == "suzuki" and stored.kind == "closed"
    assert stored.at.replace(tzinfo=UTC) == NOW.astimezone(UTC)
    assert note.text == "解決" and note.event_id == event.id
    with pytest.raises(StaffError, match="既に終了しています"):
        close_case(svc, "C000001", "again", "suzuki", NOW)


def test_reassign_validates_the_partner_against_the_directory(svc: Service) -> None:
    seed(svc, NOW, partner="city")
    with pytest.raises(StaffError, match="使える ID: city"):
        reassign_case(svc, "C000001", "nosuch", None, "sato", NOW)
    event = reassign_case(svc, "C000001", "genki", "専門的な支援が必要", "sato", NOW)
    assert event.detail == "partner city -> genki"
    with Session(svc.engine) as session:
        case = session.get(Case, 1)
    assert case is not None and case.partner == "genki"
    with pytest.raises(StaffError, match="担当は既に"):
        reassign_case(svc, "C000001", "genki", None, "sato", NOW)


def test_callback_done_and_attempts_are_recorded(svc: Service) -> None:
    seed(svc, NOW, urgent=True)
    record_callback(svc, "C000001", False, "不在、留守電なし", "ito", NOW)
    record_callback(svc, "C000001", True, None, "ito", NOW + timedelta(hours=1))
    with Session(svc.engine) as session:
        kinds = [e.kind for e in session.exec(select(Event).order_by(Event.id))]  # type: ignore[arg-type]
    assert kinds == ["callback-attempt", "callback-done"]
    assert "2026-11-27 11:00 済" in show_case(svc, "C000001")
    with pytest.raises(StaffError, match="--done"):
        record_callback(svc, "C000001", False, None, "ito", NOW)


def test_unknown_case_is_reported_with_a_hint(svc: Service) -> None:
    with pytest.raises(CaseNotFound, match="cases"):
        show_case(svc, "C000999")


def test_actor_comes_from_intake_staff_then_the_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTAKE_STAFF", "yamada")
    assert staff_actor() == "yamada"
    monkeypatch.delenv("INTAKE_STAFF")
    monkeypatch.setattr("getpass.getuser", lambda: "osuser")
    assert staff_actor() == "osuser"


# --- the argparse wiring, as service.py will use it ---------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_commands(p.add_subparsers(dest="command", required=True))
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


def test_commands_run_from_the_parser(
    svc: Service,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INTAKE_STAFF", "cli-user")
    config = str(tmp_path / "intake.toml")
    seed(svc, NOW, urgent=True)
    with session_scope(svc.engine) as session:
        session.add(
            Outbox(
                mailbox=svc.settings.mailbox.key,
                kind="alert",
                priority=0,
                dedupe_key="alert:message:1",
                case_id=1,
                recipients=json.dumps([ONCALL]),
                message_id="<al@x>",
                content=b"x",
                created_at=NOW.astimezone(UTC),
                next_attempt_at=NOW.astimezone(UTC),
            )
        )
    assert run(["cases", "--config", config, "--urgent"]) == 0
    assert "C000001" in capsys.readouterr().out
    assert run(["ack", "C000001", "--config", config]) == 0
    assert "再通知は止まります" in capsys.readouterr().out
    assert run(["reassign", "C000001", "--partner", "genki", "--config", config]) == 0
    assert run(["callback", "C000001", "--done", "--note", "話せた", "--config", config]) == 0
    assert run(["close", "C000001", "--note", "終了", "--config", config]) == 0
    assert run(["show", "C000001", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "cli-user" in out and "通知の確認" in out and "担当の変更" in out
    with Session(svc.engine) as session:
        actors = {e.actor for e in session.exec(select(Event))}
    assert actors == {"cli-user"}


def test_bad_dates_and_months_are_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["cases", "--since", "27/11/2026"])
    assert "YYYY-MM-DD" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser().parse_args(["report", "--month", "2026-13"])
    assert "YYYY-MM" in capsys.readouterr().err


def test_staff_command_refuses_a_database_that_does_not_exist(tmp_path: Path) -> None:
    """Opening a SQLite file creates it: `cases` with the wrong config said "no cases"."""
    from intake.staff import _require_database

    with pytest.raises(StaffError, match=r"データベース .* がありません"):
        _require_database(f"sqlite:///{(tmp_path / 'nowhere.db').as_posix()}")
    (tmp_path / "here.db").write_bytes(b"")
    _require_database(f"sqlite:///{(tmp_path / 'here.db').as_posix()}")
    _require_database("postgresql+psycopg://intake@db.example.jp/intake")


def test_a_note_can_come_from_a_file_or_standard_input_never_the_command_line(
    tmp_path: Path,
    svc: Service,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A note on the command line is visible in ps to every local account and stays in
    the shell history; notes are about residents (review rv9b)."""
    import io

    config = str(tmp_path / "intake.toml")
    seed(svc, NOW)
    note = tmp_path / "note.txt"
    note.write_text("母親と電話で話せた。来週もう一度連絡する。\n", encoding="utf-8")
    assert run(["callback", "C000001", "--note-file", str(note), "--config", config]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("本人と面談済み\n"))
    assert run(["close", "C000001", "--note-file", "-", "--config", config]) == 0
    capsys.readouterr()
    assert run(["show", "C000001", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "母親と電話で話せた" in out and "本人と面談済み" in out
    with pytest.raises(SystemExit):  # one or the other, and close needs one
        parser().parse_args(["close", "C000001", "--note", "a", "--note-file", "-"])
    with pytest.raises(SystemExit):
        parser().parse_args(["close", "C000001"])
