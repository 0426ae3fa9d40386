"""Staff commands: look at cases and change them, each change on the audit trail.

``add_commands(subparsers)`` registers ``ack``, ``cases``, ``show``, ``close``,
``reassign``, ``callback``, ``escalate``, ``report`` and ``purge`` on service.py's
sub-parsers; each sets ``func`` to a callable taking the parsed args and returning an exit
code. The functions behind them take ``(svc, ..., now)`` and return data or text, so they
are tested without a subprocess; only the command wrappers here read the clock.

Every command that changes a case records an ``Event`` whose actor is the staff member:
``$INTAKE_STAFF`` when set (a shared login), else the operating-system user. Notes that
staff write go to ``CaseNote`` (their own table) so that retention can remove their text
without touching the audit trail of who did what, when.

Output is for people: tables with Japanese column labels, aligned for full-width text.
It may show residents' mail (``show``), so it goes to stdout only, never to the logs.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from email import message_from_bytes
from email.header import decode_header, make_header
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, col, select

from intake.digest import TOPIC_JA
from intake.errors import IntakeError
from intake.escalate import (
    ACK_EVENT,
    CALLBACK_DONE,
    acknowledge_alert,
    add_event,
    alert_state,
    callback_due,
    case_by_number,
    escalate,
    utc,
)
from intake.store import Case, Event, Outbox, StoredMessage, session_scope

if TYPE_CHECKING:
    from intake.pipeline import Service

STATUS_JA = {"new": "新規", "open": "対応中", "closed": "終了"}
ACK_JA = {
    "pending": "未送信",
    "queued": "送信待ち",
    "sent": "送信済み",
    "ack_failed": "送信失敗",
    "ack_in_doubt": "送信不明（届いたか確認できません）",
}
STATUSES = tuple(STATUS_JA)
# Stored messages that are not the resident's ordinary mail: staff traffic kept with the
# case (a staff address without thread headers or confirmation code: it acknowledged
# nothing) and a repeat of a mail already stored (no second case, ack or alert).
MESSAGE_STATUS_JA = {
    "staff": "職員のメール・対応確認にはなっていません",
    "duplicate": "重複（同じメール）",
}


class StaffError(IntakeError):
    """A staff command cannot do what was asked; the message says what to do instead."""


class CaseNote(SQLModel, table=True):
    """Free text a staff member wrote about a case, linked to the event that carried it."""

    __tablename__ = "case_note"

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="event.id", index=True)
    case_id: int = Field(foreign_key="case.id", index=True)
    text: str = ""


def ensure_tables(engine: Engine) -> None:
    """Create this layer's own tables when ``open_database`` ran before this module loaded."""
    from intake.report import SenderMark

    SQLModel.metadata.create_all(
        engine,
        tables=[CaseNote.__table__, SenderMark.__table__],  # type: ignore[attr-defined]
    )


def staff_actor() -> str:
    """Who is typing: ``$INTAKE_STAFF`` (set it on a shared account), else the OS user."""
    return os.environ.get("INTAKE_STAFF") or getpass.getuser()


# --- display helpers ------------------------------------------------------------------


def display_width(text: str) -> int:
    """Columns a terminal uses for ``text``: full-width (W/F) characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned table: header, a rule, rows. Readable in any terminal or mail."""
    widths = [display_width(h) for h in headers]
    for row in rows:
        widths = [max(w, display_width(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(pad(h, w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


# Why an acknowledgement was not sent (``Case.ack_state`` "suppressed:<reason>", from
# ``intake.pipeline.acknowledgement_block`` and ``intake.automatic``), as staff read it.
# Exact reasons first, then families by prefix; an unknown one shows its id.
SUPPRESSED_JA = {
    "auto-submitted:auto-replied": "自動応答メール",
    "bounce": "配信エラー通知",
    "report": "配信エラー通知",
    "null-sender": "配信エラー通知などの自動送信メール",
    "mdn": "開封確認の通知",
    "feedback-report": "迷惑メール報告",
    "precedence:list": "メーリングリスト",
    "precedence:bulk": "一斉配信メール",
    "precedence:junk": "迷惑メール",
    "precedence:auto_reply": "自動応答メール",
    "delivered-to:mailing-list": "メーリングリスト",
    "list-robot-sender": "メーリングリスト",
    "noreply-sender": "返信を受け付けない送信元（noreply）",
    "x-auto-response-suppress": "自動応答メール",
    "x-apple-action:vacation": "自動応答メール",
    "auto-reply-subject": "自動応答メール",
    "x-mailer:autoresponder": "自動応答メール",
    "exchange-generated": "自動送信メール",
    "content:phishing": "詐欺メールの疑い",
    "content:advertising": "広告メール",
    "no-sender": "送信者不明",
    "own-address": "このシステム自身のメール",
    "own-mail-loop": "このシステム自身のメール",
    "own-mail-marker": "このシステム自身のメール",
    "staff-address": "職員のアドレスから",
    "rate-limited": "同じ送信者に返信済み",
    "quarantined": "メールを読み取れませんでした",
    "first-read-old": "導入・復旧時に受信箱にあった古いメール（返信済みかもしれません）",
    "read-before": "復元前のデータベースで受付済みのメール（自動返信はその時に送信済み・再送なし）",
}
SUPPRESSED_PREFIX_JA = (
    ("auto-submitted:", "自動送信メール"),
    ("daemon-sender:", "配信エラー通知などの自動送信メール"),
    ("precedence:", "一斉配信メール"),
    ("list-", "メーリングリスト"),
    ("x-mailman", "メーリングリスト"),
    ("x-ml", "メーリングリスト"),
    ("mailing-list", "メーリングリスト"),
    ("x-sequence", "メーリングリスト"),
    ("x-auto", "自動応答メール"),
    ("x-spam", "迷惑メール"),
    ("x-asf-spam", "迷惑メール"),
    ("x-ms-exchange-organization-scl", "迷惑メール"),
    ("content:", "迷惑メール"),
)


def suppressed_label(reason: str) -> str:
    """The Japanese words for why no acknowledgement was sent; the id if it is unknown."""
    if reason in SUPPRESSED_JA:
        return SUPPRESSED_JA[reason]
    for prefix, label in SUPPRESSED_PREFIX_JA:
        if reason.startswith(prefix):
            return label
    return reason


def ack_label(state: str) -> str:
    """``返信`` as staff read it. Why not the stored id: ``送らず(auto-submitted:auto-replied)``
    is a header name to the desk, not a reason they can act on."""
    if state.startswith("suppressed:"):
        return f"送らず（{suppressed_label(state.partition(':')[2])}）"
    return ACK_JA.get(state, state)


# Outgoing mail (``Outbox.kind``/``status``) and history (``Event.kind``) in ``show``: the
# stored ids stay as they are (reports, migrations and other tools read them), only their
# display is Japanese. An unknown id is shown as it is.
MAIL_KIND_JA = {
    "ack": "受付返信",
    "alert": "緊急通知",
    "alert-retry": "緊急通知（再送）",
    "escalation": "再通知",
    "escalation-retry": "再通知（再送）",
    "digest": "ダイジェスト",
    "rules-fallback": "ルール誤りのお知らせ",
}
MAIL_STATUS_JA = {
    "queued": "送信待ち",
    "sending": "送信中",
    "sent": "送信済み",
    "failed": "送信失敗",
}
EVENT_JA = {
    "case-opened": "受付",
    "follow-up": "続きのメール",
    "duplicate": "重複メール",
    "quarantined": "読み取りエラー",
    "read-later": "後から読み取り",
    "read-given-up": "読み取りを断念",
    "alert-queued": "緊急通知を作成",
    "alert-acknowledged": "通知の確認",
    "alert-undelivered": "通知が届かない",
    "alert-late": "通知の遅れ",
    "escalated": "再通知",
    "recipients-refused": "宛先が受け取り拒否",
    "ack-bounced": "受付返信が戻った",
    "ack-delayed": "受付返信の配送が遅れている（再送中）",
    "digest": "ダイジェストに掲載",
    "staff-mail": "職員のメール",
    "staff-reply-urgent-words": "職員の返信に緊急の語",
    "closed": "終了",
    "reassigned": "担当の変更",
    "callback-done": "折り返し連絡（完了）",
    "callback-attempt": "折り返し連絡（つながらず）",
}
# Events named "<what>:<mail kind>" (``intake.send``) and "<mail kind>-<what>" (a mail
# answering one of ours, ``intake.pipeline``).
_EVENT_PREFIX_JA = {
    "sent:": "送信",
    "failed:": "送信失敗",
    "refused:": "受け取り拒否",
    "in-doubt-resend:": "再送（届いたか不明のため）",
}
_EVENT_SUFFIX_JA = {
    "-bounced": "が戻った",
    "-auto-reply": "への自動応答",
    "-reply": "への返信",
}


def mail_kind_label(kind: str) -> str:
    return MAIL_KIND_JA.get(kind, kind)


def event_label(kind: str) -> str:
    """An ``Event.kind`` in Japanese (``case-opened`` -> 受付); the id if it is unknown."""
    if kind in EVENT_JA:
        return EVENT_JA[kind]
    for prefix, label in _EVENT_PREFIX_JA.items():
        if kind.startswith(prefix):
            return f"{label}（{mail_kind_label(kind[len(prefix) :])}）"
    for suffix, label in _EVENT_SUFFIX_JA.items():
        base = kind[: -len(suffix)]
        if kind.endswith(suffix) and base in MAIL_KIND_JA:
            return f"{MAIL_KIND_JA[base]}{label}"
    return kind


def _local(moment: datetime | None, svc: Service) -> str:
    return utc(moment).astimezone(svc.calendar.tz).strftime("%Y-%m-%d %H:%M") if moment else ""


def _subject(content: bytes) -> str:
    try:
        raw = message_from_bytes(content)["Subject"]
        return str(make_header(decode_header(raw))) if raw else ""
    except (ValueError, LookupError):
        return "（件名を読めません）"


# --- cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseRow:
    number: str
    received: datetime
    topic: str
    urgent: bool
    partner: str
    status: str
    ack_state: str


@dataclass(frozen=True)
class CaseFilter:
    status: str | None = None
    topic: str | None = None
    partner: str | None = None
    urgent: bool = False
    since: date | None = None  # first day included, in the service's time zone
    until: date | None = None  # last day included


def list_cases(svc: Service, filters: CaseFilter = CaseFilter()) -> list[CaseRow]:
    """The cases matching ``filters``, newest first."""
    tz = svc.calendar.tz
    query = select(Case).where(Case.mailbox == svc.settings.mailbox.key)
    if filters.status:
        query = query.where(Case.status == filters.status)
    if filters.topic:
        query = query.where(Case.topic == filters.topic)
    if filters.partner:
        query = query.where(Case.partner == filters.partner)
    if filters.urgent:
        query = query.where(Case.urgent == True)  # noqa: E712 - SQL expression, not a truth test
    if filters.since:
        query = query.where(Case.created_at >= utc(datetime.combine(filters.since, time(), tz)))
    if filters.until:
        end = datetime.combine(filters.until + timedelta(days=1), time(), tz)
        query = query.where(Case.created_at < utc(end))
    with Session(svc.engine) as session:
        cases = session.exec(query.order_by(col(Case.created_at).desc(), col(Case.id).desc())).all()
    return [
        CaseRow(c.number, utc(c.created_at), c.topic, c.urgent, c.partner, c.status, c.ack_state)
        for c in cases
    ]


CASE_HEADERS = ("受付番号", "受信日時", "分類", "緊急", "担当", "状態", "返信")


def format_cases(svc: Service, rows: Sequence[CaseRow]) -> str:
    """The ``cases`` table with Japanese labels, or a sentence when nothing matches."""
    if not rows:
        return "該当する相談はありません。"

    def partner_name(pid: str) -> str:
        partner = svc.directory.get(pid)
        return partner.name if partner else pid

    table = format_table(
        CASE_HEADERS,
        [
            (
                r.number,
                _local(r.received, svc),
                TOPIC_JA.get(r.topic, r.topic),
                "緊急" if r.urgent else "",
                partner_name(r.partner),
                STATUS_JA.get(r.status, r.status),
                ack_label(r.ack_state),
            )
            for r in rows
        ],
    )
    return f"{table}\n{len(rows)} 件"


def show_case(svc: Service, number: str) -> str:
    """Everything about one case: its fields, messages, outgoing mails and history."""
    ensure_tables(svc.engine)
    with Session(svc.engine) as session:
        case = case_by_number(session, number, svc.settings.mailbox.key)
        assert case.id is not None
        messages = session.exec(
            select(StoredMessage)
            .where(StoredMessage.case_id == case.id)
            .order_by(col(StoredMessage.received_at), col(StoredMessage.id))
        ).all()
        mails = session.exec(
            select(Outbox)
            .where(Outbox.case_id == case.id)
            .order_by(col(Outbox.created_at), col(Outbox.id))
        ).all()
        events = session.exec(
            select(Event).where(Event.case_id == case.id).order_by(col(Event.at), col(Event.id))
        ).all()
        notes: dict[int | None, str] = {
            n.event_id: n.text
            for n in session.exec(select(CaseNote).where(CaseNote.case_id == case.id))
        }
        state = alert_state(session, case.id)
    partner = svc.directory.get(case.partner)
    received = utc(case.created_at)
    callback = [e for e in events if e.kind == CALLBACK_DONE]
    lines = [
        f"受付番号: {case.number}",
        f"受信日時: {_local(received, svc)}",
        f"状態: {STATUS_JA.get(case.status, case.status)}",
        f"分類: {TOPIC_JA.get(case.topic, case.topic)}"
        + "".join(f" / {TOPIC_JA.get(t, t)}" for t, _s in json.loads(case.topics)[1:]),
        f"担当: {partner.name if partner else case.partner} ({case.partner})",
        f"送信者: {case.sender or '（不明または削除済み）'}",
        f"電話番号（本文から）: {', '.join(json.loads(case.phone or '[]')) or '（なし）'}",
        f"返信: {ack_label(case.ack_state)}",
    ]
    if case.needs_human:
        lines.append("要確認: 自動判定できないため、職員が内容を確認してください")
    if case.urgent:
        reasons = ", ".join(
            f"「{r.get('surface', '')}」({r.get('rule', '')})"
            for r in json.loads(case.urgent_reasons)
        )
        lines.append(f"緊急: はい — {reasons or '理由の記録なし'}")
        lines.append(
            f"折り返し期限: {_local(callback_due(received, svc.calendar), svc)}"
            + (f"（{_local(callback[0].at, svc)} 済）" if callback else "（未了）")
        )
        if state is not None:
            ack = _local(state.acknowledged_at, svc) if state.acknowledged_at else "未確認"
            lines.append(f"通知の確認: {ack}（再通知 {state.escalations_total} 回）")
    lines.append("")
    lines.append(f"== 受信メール ({len(messages)}) ==")
    for m in messages:
        lines.append(
            f"-- {_local(m.received_at, svc)}  {m.from_addr or '（送信者不明）'}"
            + ("  [続き]" if m.is_followup else "")
            + (f"  [{MESSAGE_STATUS_JA[m.status]}]" if m.status in MESSAGE_STATUS_JA else "")
            + (f"  [隔離: {m.stage_error}]" if m.stage_error else "")
        )
        if m.raw is None and not m.body:
            lines.append("（保存期間を過ぎたため本文は削除済み）")
            continue
        lines.append(f"件名: {m.subject}")
        lines.append((m.new_text or m.body).rstrip())
    lines.append("")
    lines.append(f"== 送信メール ({len(mails)}) ==")
    mail_rows = [
        (
            mail_kind_label(o.kind),
            ", ".join(json.loads(o.recipients)),
            MAIL_STATUS_JA.get(o.status, o.status),
            _local(o.sent_at, svc) if o.sent_at else "",
            _subject(o.content) if o.content else "",
        )
        for o in mails
    ]
    if mail_rows:
        lines.append(format_table(("種類", "宛先", "状態", "送信日時", "件名"), mail_rows))
    lines.append("")
    lines.append(f"== 履歴 ({len(events)}) ==")
    if events:
        lines.append(
            format_table(
                ("日時", "内容", "担当者", "詳細"),
                [
                    (
                        _local(e.at, svc),
                        event_label(e.kind),
                        e.actor,
                        e.detail + (f" メモ: {notes[e.id]}" if notes.get(e.id) else ""),
                    )
                    for e in events
                ],
            )
        )
    return "\n".join(lines)


def _change(
    svc: Service,
    number: str,
    kind: str,
    note: str | None,
    actor: str,
    now: datetime,
    apply: Callable[[Case], str],
) -> Event:
    """Apply one change to a case and record it (``apply`` returns the event's detail)."""
    with session_scope(svc.engine) as session:
        case = case_by_number(session, number, svc.settings.mailbox.key)
        detail = apply(case)
        event = add_event(session, kind, case.id, detail, actor, now)
        session.flush()
        if note:
            assert event.id is not None and case.id is not None
            session.add(CaseNote(event_id=event.id, case_id=case.id, text=note))
        return event


def close_case(svc: Service, number: str, note: str, actor: str, now: datetime) -> Event:
    """Close a case (stops its escalation). Closing twice is refused, so the trail is clean."""
    ensure_tables(svc.engine)

    def apply(case: Case) -> str:
        if case.status == "closed":
            raise StaffError(
                f"{case.number} は既に終了しています"
                f"（履歴は python service.py show {case.number} で表示できます）"
            )
        before = case.status
        case.status = "closed"
        return f"status {before} -> closed"

    return _change(svc, number, "closed", note, actor, now, apply)


def reassign_case(
    svc: Service, number: str, partner_id: str, note: str | None, actor: str, now: datetime
) -> Event:
    """Give a case to another partner; its next digest lists the case's messages."""
    ensure_tables(svc.engine)
    if svc.directory.get(partner_id) is None:
        known = ", ".join(p.id for p in svc.directory.partners)
        raise StaffError(f"担当 {partner_id!r} は partners.toml にありません（使える ID: {known}）")

    def apply(case: Case) -> str:
        if case.partner == partner_id:
            raise StaffError(f"{case.number} の担当は既に {partner_id} です")
        before = case.partner
        case.partner = partner_id
        return f"partner {before} -> {partner_id}"

    return _change(svc, number, "reassigned", note, actor, now, apply)


def record_callback(
    svc: Service, number: str, done: bool, note: str | None, actor: str, now: datetime
) -> Event:
    """Record a callback to the resident: ``done`` when reached, else an attempt (a note)."""
    ensure_tables(svc.engine)
    if not done and not note:
        raise StaffError(
            "相談者と話せたときは --done を、話せなかったときは --note に経過を書いてください"
        )

    def apply(case: Case) -> str:
        if case.status == "new":
            case.status = "open"
        return "callback " + ("done" if done else "attempted")

    kind = CALLBACK_DONE if done else "callback-attempt"
    return _change(svc, number, kind, note, actor, now, apply)


# --- argparse wiring ------------------------------------------------------------------


def _service(args: argparse.Namespace) -> Service:
    from intake.config import load_settings
    from intake.pipeline import Service

    settings = load_settings(args.config)
    _require_database(settings.database_url)
    # The night alert tells the on-call person to run ``show``: a rules typo must not
    # keep them from reading the case (the worker runs with the last good copy too).
    svc = Service.from_settings(settings, read_only=True)
    if svc.rules_fallback is not None:
        saved = svc.rules_fallback.snapshot.saved_at.astimezone(settings.timezone)
        print(
            "注意: 相談ルールのファイルに誤りがあるため、前回正しく読み込めたルール"
            f"（{saved:%m月%d日 %H:%M} 保存）で表示しています。"
            "担当者は `python service.py check` で確認してください。",
            file=sys.stderr,
        )
    ensure_tables(svc.engine)
    return svc


def _require_database(url: str) -> None:
    """Refuse to work on a SQLite database that does not exist yet.

    Why: opening one creates it. A staff member who ran ``cases`` with another config (or
    a relative path from another folder) at night was told 「該当する相談はありません」 by
    a brand-new, empty database instead of being told it was the wrong one.
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    if not Path(parsed.database).exists():
        raise StaffError(
            f"データベース {parsed.database} がありません。この設定ではサービスがまだ動いて"
            "いないか、サービスの設定ファイルではありません（サービスと同じ --config を"
            "指定してください）"
        )


def _now(svc: Service) -> datetime:
    return datetime.now(svc.calendar.tz)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: write a day as YYYY-MM-DD") from exc


def cmd_ack(args: argparse.Namespace) -> int:
    svc = _service(args)
    result = acknowledge_alert(svc, args.case, staff_actor(), _now(svc))
    if not result.had_alert:
        print(f"{result.number}: 記録しました（この相談には緊急通知がありません）")
    elif result.already:
        print(f"{result.number}: 記録しました（通知は既に確認済みでした）")
    else:
        print(f"{result.number}: 通知を確認しました。再通知は止まります。")
    return 0


def cmd_cases(args: argparse.Namespace) -> int:
    svc = _service(args)
    filters = CaseFilter(
        status=args.status,
        topic=args.topic,
        partner=args.partner,
        urgent=args.urgent,
        since=args.since,
        until=args.until,
    )
    print(format_cases(svc, list_cases(svc, filters)))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    print(show_case(_service(args), args.case))
    return 0


def _note(args: argparse.Namespace) -> str | None:
    """The staff note: ``--note TEXT``, or ``--note-file PATH`` (``-``: standard input).

    Why a file: a note given on the command line is visible to every local account in
    ``ps`` while the command runs and stays in the shell's history (review rv9b); notes
    are about residents."""
    path = getattr(args, "note_file", None)
    if path is None:
        return args.note  # type: ignore[no-any-return]
    if path == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            name = type(exc).__name__
            raise StaffError(f"メモのファイル {path} を読めません（{name}）") from None
    return text.strip() or None


def cmd_close(args: argparse.Namespace) -> int:
    svc = _service(args)
    note = _note(args)
    if not note:
        raise StaffError("終了の理由を --note か --note-file で書いてください")
    close_case(svc, args.case, note, staff_actor(), _now(svc))
    print(f"{args.case}: 終了にしました")
    return 0


def cmd_reassign(args: argparse.Namespace) -> int:
    svc = _service(args)
    event = reassign_case(svc, args.case, args.partner, _note(args), staff_actor(), _now(svc))
    print(f"{args.case}: 担当を変更しました ({event.detail})")
    return 0


def cmd_callback(args: argparse.Namespace) -> int:
    svc = _service(args)
    record_callback(svc, args.case, args.done, _note(args), staff_actor(), _now(svc))
    print(f"{args.case}: 折り返し連絡を記録しました" + ("（完了）" if args.done else ""))
    return 0


def cmd_escalate(args: argparse.Namespace) -> int:

    svc = _service(args)
    now = _now(svc)
    queued = escalate(svc, now)
    sent = svc.deliver(now)
    print(
        f"escalations queued {queued}; sent {sent.sent}, deferred {sent.deferred}, "
        f"failed {sent.failed}"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from intake.report import monthly_report, write_report

    svc = _service(args)
    paths = write_report(monthly_report(svc, args.month), Path(args.out), svc.directory)
    for path in paths:
        print(path)
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    from intake.retention import purge, retention_days

    svc = _service(args)
    days = args.days if args.days is not None else retention_days(svc.settings)
    result = purge(svc, _now(svc), days)
    print(f"purged {result} message(s) older than {days} days")
    return 0


def _month(text: str) -> str:
    try:
        datetime.strptime(text, "%Y-%m")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: write the month as YYYY-MM") from exc
    return text


def add_commands(sub: Any) -> None:
    """Register the staff and operations commands on service.py's sub-parsers."""

    def command(
        name: str, help_text: str, func: Callable[[argparse.Namespace], int], case: bool = True
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        p.add_argument("--config", help="TOML config (default: $INTAKE_CONFIG)")
        if case:
            p.add_argument("case", metavar="CASE", help="case number, e.g. C000042")
        p.set_defaults(func=func)
        return p

    command("ack", "acknowledge an urgent alert (stops escalation)", cmd_ack)
    p = command("cases", "list cases (受付番号 受信日時 分類 ...)", cmd_cases, case=False)
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--topic", choices=sorted(TOPIC_JA))
    p.add_argument("--partner", help="partner id from partners.toml")
    p.add_argument("--urgent", action="store_true", help="only urgent cases")
    p.add_argument("--since", type=_day, help="received on or after YYYY-MM-DD")
    p.add_argument("--until", type=_day, help="received on or before YYYY-MM-DD")
    command("show", "a case with its mails and history", cmd_show)
    note_file_help = (
        "read the note from this file (- for standard input): unlike --note, not visible "
        "to other accounts in ps or kept in the shell history"
    )
    p = command("close", "close a case", cmd_close)
    notes = p.add_mutually_exclusive_group(required=True)
    notes.add_argument("--note", help="why it is closed (kept until purge)")
    notes.add_argument("--note-file", metavar="PATH", help=note_file_help)
    p = command("reassign", "give a case to another partner", cmd_reassign)
    p.add_argument("--partner", required=True, help="partner id from partners.toml")
    notes = p.add_mutually_exclusive_group()
    notes.add_argument("--note")
    notes.add_argument("--note-file", metavar="PATH", help=note_file_help)
    p = command("callback", "record a callback to the resident", cmd_callback)
    p.add_argument("--done", action="store_true", help="the resident was reached")
    notes = p.add_mutually_exclusive_group()
    notes.add_argument("--note")
    notes.add_argument("--note-file", metavar="PATH", help=note_file_help)
    command("escalate", "escalate unacknowledged urgent alerts now", cmd_escalate, case=False)
    p = command("report", "monthly figures as Markdown/HTML + PNG", cmd_report, case=False)
    p.add_argument("--month", required=True, type=_month, help="YYYY-MM (received, JST)")
    p.add_argument("--out", default="reports", help="output folder (default: ./reports)")
    p = command(
        "purge", "remove mail bodies older than the retention period", cmd_purge, case=False
    )
    p.add_argument("--days", type=int, help="keep this many days (default: config)")


__all__ = [
    "ACK_EVENT",
    "CALLBACK_DONE",
    "CaseFilter",
    "CaseNote",
    "CaseRow",
    "StaffError",
    "add_commands",
    "close_case",
    "ensure_tables",
    "format_cases",
    "list_cases",
    "reassign_case",
    "record_callback",
    "show_case",
    "staff_actor",
]
