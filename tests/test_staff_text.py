"""The words staff and partners read: the on-call alert, the failover notice, the digest
footer, the staff commands' labels and errors (review rvx, findings 4, 6 and 7).

The alert and the notices are written by the service's own code (``_queue_alert``,
``escalate``, ``quarantine``) on a temp SQLite database; no mail server is needed to read
what they say.
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select

from intake.compose import render_digest
from intake.escalate import _undelivered_notice, escalate
from intake.partners import load_directory
from intake.pipeline import Service, quarantine
from intake.staff import ack_label, event_label, format_cases, list_cases, show_case
from intake.store import Case, Outbox, StoredMessage, session_scope, to_db
from tests.helpers import BACKUP, offline_service, urgent_case

ROOT = Path(__file__).resolve().parents[1]
JST = ZoneInfo("Asia/Tokyo")
FRIDAY_NIGHT = datetime(2026, 11, 27, 20, 2, tzinfo=JST)  # office shut until Mon 11/30 08:30
WEDNESDAY_10 = datetime(2026, 11, 25, 10, 0, tzinfo=JST)  # office open until 16:30


@pytest.fixture
def svc(tmp_path: Path) -> Service:
    return offline_service(tmp_path)


def mails(svc: Service, kind: str) -> list[EmailMessage]:
    with Session(svc.engine) as session:
        rows = session.exec(select(Outbox).where(Outbox.kind == kind).order_by(Outbox.id)).all()
        return [message_from_bytes(r.content, policy=policy.default) for r in rows]  # type: ignore[misc]


def text_of(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def code_of(mail: EmailMessage) -> str:
    return str(mail["Subject"]).rsplit("確認コード ", 1)[1].strip()


def test_night_alert_asks_for_contact_now_with_the_latest_deadline_in_brackets(
    svc: Service,
) -> None:
    """Friday 20:02: not "期限 2026-11-30 08:30", which a woken reader takes as "Monday"."""
    urgent_case(svc, FRIDAY_NIGHT)
    [alert] = mails(svc, "alert")
    text = text_of(alert)
    assert text.splitlines()[0] == "緊急の可能性がある相談を受け付けました。"
    assert "すぐに内容を確認し、相談者に電話で連絡してください（電話番号は下記）。" in text
    # what to do if life is in danger now (review rv10a F18)
    assert "ためらわず110番・119番に通報してください。" in text
    assert "折り返し期限: できるだけ早く（遅くとも 11月30日(月) 8時30分）" in text
    assert "2026-11-30" not in text and "下記の折り返し期限までに" not in text
    assert "受信日時: 11月27日(金) 20:02" in text
    # Still says which case and how to acknowledge it.
    assert "受付番号: C000001" in text
    assert f"件名の「C000001」と「確認コード {code_of(alert)}」は消さずに返信してください。" in text
    assert "service.py ack C000001" in text


def test_office_hours_alert_deadline_is_today_at_closing(svc: Service) -> None:
    urgent_case(svc, WEDNESDAY_10)
    [alert] = mails(svc, "alert")
    assert "折り返し期限: 本日 16時30分" in text_of(alert)


def test_alert_of_a_mail_without_a_phone_says_to_answer_by_mail(svc: Service) -> None:
    case_id = urgent_case(svc, WEDNESDAY_10)
    with session_scope(svc.engine) as session:
        case = session.get(Case, case_id)
        assert case is not None
        case.phone = "[]"
        msg = StoredMessage(
            mailbox=case.mailbox,
            sha256=uuid.uuid4().hex,
            raw=b"x",
            received_at=to_db(WEDNESDAY_10),
            status="processed",
            case_id=case_id,
        )
        session.add(msg)
        session.flush()
        from intake.pipeline import _queue_alert

        _queue_alert(svc, session, case, msg, WEDNESDAY_10, None, WEDNESDAY_10)
    text = text_of(mails(svc, "alert")[-1])
    assert "相談者にメールで返信して連絡してください（本文に電話番号はありません）。" in text
    assert "電話で連絡" not in text


def test_alert_written_after_its_deadline_says_the_deadline_has_passed(svc: Service) -> None:
    """A Wednesday 10:00 mail read on Thursday (an outage): "本日 16時30分" would be false."""
    from intake.pipeline import _queue_alert

    case_id = urgent_case(svc, WEDNESDAY_10)
    thursday = WEDNESDAY_10 + timedelta(days=1)
    with session_scope(svc.engine) as session:
        case = session.get(Case, case_id)
        assert case is not None
        copy = StoredMessage(  # a second mail of the case, read a day late
            mailbox=case.mailbox,
            sha256=uuid.uuid4().hex,
            raw=b"y",
            received_at=to_db(WEDNESDAY_10),
            status="processed",
            case_id=case_id,
        )
        session.add(copy)
        session.flush()
        _queue_alert(svc, session, case, copy, WEDNESDAY_10, None, thursday)
    text = text_of(mails(svc, "alert")[-1])
    assert "折り返し期限: できるだけ早く（期限の 11月25日(水) 16時30分 を過ぎています）" in text
    assert "本日" not in text


def test_unreadable_mail_alert_gives_the_reason_of_the_notice_and_the_server_command(
    svc: Service,
) -> None:
    saturday_3am = datetime(2026, 11, 28, 3, 0, tzinfo=JST)
    with session_scope(svc.engine) as session:
        msg = StoredMessage(
            mailbox=svc.settings.mailbox.key,
            sha256=uuid.uuid4().hex,
            raw=b"From: x@example.jp\r\nSubject: =?bad?=\r\n\r\n\xff\xfe",
            received_at=to_db(saturday_3am),
            status="received",
        )
        session.add(msg)
        session.flush()
        quarantine(svc, session, msg, "fetch", "ImapError", saturday_3am)
    [alert] = mails(svc, "alert")
    text = text_of(alert)
    assert "通知の理由:\n・メールを自動で読み取れませんでした（緊急かどうか判断できません）" in text
    assert "緊急と判断した理由" not in text
    assert "サーバーで python service.py show C000001 を実行して原文を確認してください。" in text
    assert "管理画面" not in text
    assert "すぐに原文を確認し、緊急であれば相談者に連絡してください。" in text
    assert "折り返し期限: できるだけ早く（遅くとも 11月30日(月) 8時30分）" in text
    assert "service.py ack C000001" in text


def test_late_alert_failover_tells_the_backup_why_it_comes_to_them_with_the_date(
    svc: Service,
) -> None:
    """The backup's first mail about the case is not "再通知（1回目）", its time has a day,
    and it still carries none of the resident's words."""
    urgent_case(svc, WEDNESDAY_10)  # never sent: late after 3 minutes
    assert escalate(svc, WEDNESDAY_10 + timedelta(minutes=4)) == 1
    [notice] = mails(svc, "escalation")
    assert BACKUP in str(notice["To"])
    text = text_of(notice)
    assert text.splitlines()[0].startswith(
        "※ 当番への通知が届いていないため、代わりにお知らせします。"
    )
    assert "再通知（" not in text
    assert "当番への通知メール（11月25日(水) 10:00 作成）を、まだ送信できていません。" in text
    assert "受信日時: 11月25日(水) 10:00" in text and "折り返し期限: 本日 16時30分" in text
    assert "サーバーで次を実行して原文を確認してください。" in text
    assert f"{sys.executable} " in text and "service.py show C000001 --config" in text
    assert f"「確認コード {code_of(notice)}」" in text
    for word in ("消えたい", "090-1234-5678", "resident@example.jp", "緊急"):
        assert word not in text


def _all_sent(svc: Service, at: datetime) -> None:
    """What ``intake.send`` records once the server took every queued mail."""
    with session_scope(svc.engine) as s:
        for row in s.exec(select(Outbox).where(Outbox.status == "queued")).all():
            row.status, row.sent_at = "sent", to_db(at)
            s.add(row)


def test_the_first_reminder_after_a_failover_says_re_notice_1(svc: Service) -> None:
    """The failover is no reminder (it does not count toward ``escalate_max``), so the
    first reminder after it is 再通知（1回目）, not（2回目）: staff read "2" and looked
    for a first re-notice nobody had sent."""
    urgent_case(svc, WEDNESDAY_10)  # never sent: late after 3 minutes
    assert escalate(svc, WEDNESDAY_10 + timedelta(minutes=4)) == 1  # the failover
    _all_sent(svc, WEDNESDAY_10 + timedelta(minutes=5))  # the relay is back
    assert escalate(svc, WEDNESDAY_10 + timedelta(minutes=40)) == 1  # the first reminder
    _failover, reminder = mails(svc, "escalation")
    assert "再通知（1回目）" in text_of(reminder)
    assert "再通知（2回目）" not in text_of(reminder)
    _all_sent(svc, WEDNESDAY_10 + timedelta(minutes=41))
    assert escalate(svc, WEDNESDAY_10 + timedelta(minutes=75)) == 1
    assert "再通知（2回目）" in text_of(mails(svc, "escalation")[-1])


@pytest.mark.parametrize("failover", [True, False])
def test_refused_alert_notice_opens_with_failover_line_or_reminder_number(
    svc: Service, failover: bool
) -> None:
    case = Case(id=7, mailbox=svc.settings.mailbox.key, sender="r@example.jp", partner="city")
    state = SimpleNamespace(alert_failed=True, late=False, alert_at=FRIDAY_NIGHT)
    notice = _undelivered_notice(
        svc,
        case,
        state,  # type: ignore[arg-type]
        [BACKUP],
        2,
        FRIDAY_NIGHT,
        FRIDAY_NIGHT + timedelta(minutes=1),
        failover=failover,
    )
    first = text_of(notice).splitlines()[0]
    if failover:
        assert first.startswith("※ 当番への通知が届いていないため、代わりにお知らせします。")
    else:
        assert first.startswith("※ これは再通知（2回目）です。")
    assert "折り返し期限: できるだけ早く（遅くとも 11月30日(月) 8時30分）" in text_of(notice)


def test_digest_footer_names_the_city_system_not_the_software(svc: Service) -> None:
    partner = svc.directory.partners[0]
    entry = {
        "number": "C000001",
        "received": WEDNESDAY_10,
        "followup": False,
        "topic_ja": "その他",
        "secondary": [],
        "urgent": False,
        "reasons": [],
        "ack_failed": False,
        "ack_in_doubt": False,
        "needs_human": False,
        "sender": "",
        "phones": [],
        "text": "相談です",
    }
    digest = render_digest(
        svc.env, sender=svc.sender, partner=partner, entries=[entry], now=WEDNESDAY_10, tz=JST
    )
    plain = text_of(digest)
    html_part = digest.get_body(preferencelist=("html",))
    assert html_part is not None
    html = str(html_part.get_content())  # type: ignore[attr-defined]
    for text in (plain, html):
        assert "このメールは笠岡市の相談受付システムが自動で送っています。" in text
        assert "返信しても、相談者には届きません" in text
        assert "soudan-intake" not in text
        # Replies to a digest are read as staff traffic: never "返信はできません".
        assert "返信はできません" not in text


def test_partner_names_are_spelt_as_in_the_citys_table() -> None:
    names = {p.id: p.name for p in load_directory(ROOT / "rules" / "partners.toml").partners}
    assert set(names.values()) >= {
        "笠岡市ささえ愛ほっとライン",
        "認定NPO法人ハーモニーネット未来",
        "NPO法人笠岡を元気にする会",
    }


def test_acknowledgement_not_sent_is_explained_in_japanese() -> None:
    assert ack_label("suppressed:auto-submitted:auto-replied") == "送らず（自動応答メール）"
    assert ack_label("suppressed:bounce") == "送らず（配信エラー通知）"
    assert ack_label("suppressed:list-id") == "送らず（メーリングリスト）"
    assert ack_label("suppressed:daemon-sender:mailer-daemon") == (
        "送らず（配信エラー通知などの自動送信メール）"
    )
    assert ack_label("suppressed:x-spam-flag:yes") == "送らず（迷惑メール）"
    assert ack_label("suppressed:something-new") == "送らず（something-new）"
    assert ack_label("sent") == "送信済み"


def test_event_labels_are_japanese_and_compound_ids_are_read() -> None:
    assert event_label("case-opened") == "受付"
    assert event_label("alert-queued") == "緊急通知を作成"
    assert event_label("sent:alert") == "送信（緊急通知）"
    assert event_label("failed:digest") == "送信失敗（ダイジェスト）"
    assert event_label("escalation-reply") == "再通知への返信"
    assert event_label("alert-bounced") == "緊急通知が戻った"
    assert event_label("brand-new-kind") == "brand-new-kind"


def test_show_and_cases_use_japanese_labels_for_mail_and_history(svc: Service) -> None:
    urgent_case(svc, WEDNESDAY_10)
    with session_scope(svc.engine) as session:
        case = session.exec(select(Case)).one()
        case.ack_state = "suppressed:auto-submitted:auto-replied"
        row = session.exec(select(Outbox)).one()
        row.status, row.sent_at = "sent", WEDNESDAY_10.astimezone(UTC)
        from intake.store import record_event

        record_event(session, "case-opened", case.id, "partner city", at=WEDNESDAY_10)
    shown = show_case(svc, "C000001")
    mail_table = shown.split("== 送信メール (1) ==", 1)[1].split("== 履歴", 1)[0]
    history = shown.split("== 履歴", 1)[1]
    assert "緊急通知" in mail_table and "送信済み" in mail_table
    assert "alert" not in mail_table.replace("oncall", "") and " sent " not in mail_table
    assert "受付" in history and "緊急通知を作成" in history
    assert "case-opened" not in history and "alert-queued" not in history
    assert "返信: 送らず（自動応答メール）" in shown
    listed = format_cases(svc, list_cases(svc))
    assert "送らず（自動応答メール）" in listed and "auto-submitted" not in listed


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (
            "C999999",
            "エラー: 受付番号 C999999 はありません（python service.py cases で一覧を表示できます）",
        ),
        ("42", "エラー: 受付番号 C000042 はありません"),
        (
            "abc",
            "エラー: 「abc」は受付番号ではありません。C000042（または 42）のように書いてください",
        ),
    ],
    ids=["unknown", "bare-number", "not-a-number"],
)
def test_staff_command_naming_no_case_says_so_in_japanese_with_exit_code_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], given: str, said: str
) -> None:
    import service

    svc = offline_service(tmp_path)
    urgent_case(svc, WEDNESDAY_10)  # the database exists
    config = str(tmp_path / "intake.toml")
    assert service.main(["show", "--config", config, given]) == 1
    err = capsys.readouterr().err
    assert said in err and "error:" not in err and "no case" not in err


def test_staff_command_refusal_is_in_japanese(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import service

    svc = offline_service(tmp_path)
    urgent_case(svc, WEDNESDAY_10)
    config = str(tmp_path / "intake.toml")
    assert service.main(["close", "--config", config, "C000001", "--note", "済"]) == 0
    capsys.readouterr()
    assert service.main(["close", "--config", config, "C000001", "--note", "済"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("エラー: C000001 は既に終了しています")
    assert "already" not in err
