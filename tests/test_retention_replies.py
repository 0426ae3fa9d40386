"""Retention of mail servers' replies: a refusal quotes the resident's address.

``outbox.last_error``, ``outbox.smtp_response`` and the ``failed:<kind>`` audit event keep
what the relay said; past the retention period only our label and the reply codes may
stay (review run, finding 6).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from intake import samples
from intake.config import load_settings
from intake.fetch import Mailbox
from intake.localservers import LocalDovecot
from intake.pipeline import Service, process_new_mail
from intake.retention import DEFAULT_KEEP_DAYS, purge, reply_codes_only
from intake.staff import show_case
from intake.store import Case, Event, Outbox, record_event, session_scope
from tests.helpers import offline_service, serving, write_config
from tests.test_escalate_review import _database

JST = ZoneInfo("Asia/Tokyo")
RESIDENT = "taro.yamada1999@example.jp"
SUBJECT = "夜に眠れない件"
WORDS = "寂しくて誰かに話を聞いてほしいです"
REFUSAL = f"550 5.1.1 <{RESIDENT}>: Recipient address rejected: User unknown"


class RefusesTheResident:
    """A relay that refuses the resident's address at RCPT, as a real one does for a
    mailbox that no longer exists (the reply quotes the address), and takes the rest."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address == RESIDENT:
            return REFUSAL
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 Ok: queued as 4XyZ"


def everything_stored(engine: Engine) -> str:
    """Every text and byte value of every table, joined: what a leak would be found in."""
    parts: list[str] = []
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            if not engine.dialect.has_table(conn, table.name):
                continue
            for row in conn.execute(table.select()):
                for value in row:
                    if isinstance(value, bytes):
                        parts.append(value.decode("utf-8", "replace"))
                    elif isinstance(value, str):
                        parts.append(value)
    return "\n".join(parts)


def test_a_refused_acknowledgement_keeps_its_reply_in_the_period_and_only_codes_after(
    dovecot: LocalDovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(RefusesTheResident()) as smtp:
        config = write_config(tmp_path, dovecot, smtp)
        monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
        svc = Service.from_settings(load_settings(config))
        dovecot.append(samples.consultation(RESIDENT, SUBJECT, WORDS))
        now = datetime.now(svc.calendar.tz)
        with Mailbox(svc.settings.mailbox) as mb:
            process_new_mail(svc, mb, now)
        svc.deliver(now)
    with Session(svc.engine) as s:
        ack = s.exec(select(Outbox).where(Outbox.kind == "ack")).one()
        failed = s.exec(select(Event).where(Event.kind == "failed:ack")).one()
    # The relay's reply as sent: the address is in both places the finding named.
    assert ack.status == "failed" and RESIDENT in (ack.last_error or "")
    assert RESIDENT in failed.detail

    # Inside the period nothing of it changes: staff still read what the relay said.
    purge(svc, now + timedelta(days=30), DEFAULT_KEEP_DAYS)
    with Session(svc.engine) as s:
        assert s.exec(select(Outbox.last_error).where(Outbox.id == ack.id)).one() == (
            ack.last_error
        )
        assert s.get(Event, failed.id).detail == failed.detail  # type: ignore[union-attr]
    assert RESIDENT in everything_stored(svc.engine)

    purge(svc, now + timedelta(days=400), DEFAULT_KEEP_DAYS)
    stored = everything_stored(svc.engine)
    assert RESIDENT not in stored and "taro.yamada1999" not in stored
    assert WORDS not in stored and SUBJECT not in stored
    with Session(svc.engine) as s:
        row = s.get(Outbox, ack.id)
        detail = s.get(Event, failed.id).detail  # type: ignore[union-attr]
        case = s.exec(select(Case)).one()
    assert row is not None and row.last_error == "purged; refused: 550 5.1.1"
    assert detail == "purged; refused: 550 5.1.1"
    assert case.ack_state == "ack_failed"  # the figures stay
    assert "purged; refused: 550 5.1.1" in show_case(svc, case.number)


NOW = datetime(2027, 12, 15, 9, 0, tzinfo=JST)
OLD = datetime(2026, 11, 10, 22, 0, tzinfo=JST)
RECENT = datetime(2027, 12, 1, 10, 0, tzinfo=JST)


def refused_ack(svc: Service, at: datetime, sender: str, *, status: str = "failed") -> int:
    """A case whose acknowledgement the relay refused (as ``intake.send`` records it)."""
    when = at.astimezone(UTC)
    reply = f"refused: [550] 550 5.1.1 <{sender}>: Recipient address rejected"
    with session_scope(svc.engine) as s:
        case = Case(mailbox=svc.settings.mailbox.key, created_at=when, sender=sender)
        s.add(case)
        s.flush()
        assert case.id is not None
        s.add(
            Outbox(
                mailbox=svc.settings.mailbox.key,
                kind="ack",
                dedupe_key=f"ack:case:{case.id}",
                case_id=case.id,
                recipients=json.dumps([sender]),
                message_id=f"<ack{case.id}@example.jp>",
                content=b"rendered",
                created_at=when,
                next_attempt_at=when,
                status=status,
                last_error=reply,
            )
        )
        s.add(
            Outbox(
                mailbox=svc.settings.mailbox.key,
                kind="alert",
                dedupe_key=f"alert:{case.id}",
                case_id=case.id,
                recipients='["oncall@example.jp", "duty@example.jp"]',
                message_id=f"<al{case.id}@example.jp>",
                content=b"alert",
                created_at=when,
                next_attempt_at=when,
                status="sent",
                sent_at=when,
                smtp_response="250 2.0.0 Ok: queued as 4XyZ",
                last_error="some recipients refused: duty@example.jp 550 5.1.1 no such user",
            )
        )
        record_event(s, "failed:ack", case.id, reply, at=at)
        return case.id


def service_on(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> Service:
    """An offline service on SQLite or on a fresh PostgreSQL database (whose sender-hash
    key file cannot sit beside the database: it is named)."""
    url = _database(request, tmp_path, kind)
    if url is None:
        return offline_service(tmp_path)
    offline_service(tmp_path, extra=f'\n[report]\nsalt_file = "{tmp_path / "salt"}"\n')
    config = tmp_path / "intake.toml"
    text = config.read_text(encoding="utf-8")
    text = text.replace(f"sqlite:///{(tmp_path / 'intake.db').as_posix()}", url)
    assert url in text
    config.write_text(text, encoding="utf-8")
    svc = Service.from_settings(load_settings(config))
    request.addfinalizer(svc.engine.dispose)  # before the database is dropped
    return svc


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_old_replies_become_codes_and_recent_or_unfinished_ones_stay(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    svc = service_on(request, tmp_path, kind)
    old = refused_ack(svc, OLD, "old@example.jp")
    recent = refused_ack(svc, RECENT, "recent@example.jp")
    sending = refused_ack(svc, OLD, "sending@example.jp", status="sending")
    purge(svc, NOW, DEFAULT_KEEP_DAYS)
    with Session(svc.engine) as s:
        rows = {(r.case_id, r.kind): r for r in s.exec(select(Outbox))}
        events = {e.case_id: e.detail for e in s.exec(select(Event))}
    assert rows[old, "ack"].last_error == "purged; refused: 550 5.1.1"
    assert rows[old, "ack"].recipients == "[]" and rows[old, "ack"].content == b""
    assert rows[old, "alert"].smtp_response == "purged; 250 2.0.0"
    assert rows[old, "alert"].last_error == "purged; some recipients refused: 550 5.1.1"
    assert events[old] == "purged; refused: 550 5.1.1"
    # Inside the period: untouched, for escalation and ``show``.
    assert "recent@example.jp" in (rows[recent, "ack"].last_error or "")
    assert rows[recent, "alert"].smtp_response == "250 2.0.0 Ok: queued as 4XyZ"
    assert "recent@example.jp" in events[recent]
    # A row a dead sender left ``sending`` may be resent: its mail and mark stay.
    assert rows[sending, "ack"].content == b"rendered"
    assert "sending@example.jp" in (rows[sending, "ack"].last_error or "")


def test_purge_of_one_mailbox_leaves_another_mailboxs_failure_events(tmp_path: Path) -> None:
    svc = offline_service(tmp_path)
    old = refused_ack(svc, OLD, "old@example.jp")
    with session_scope(svc.engine) as s:
        s.execute(text("UPDATE \"case\" SET mailbox = 'elsewhere' WHERE id = :i"), {"i": old})
        s.execute(text("UPDATE outbox SET mailbox = 'elsewhere' WHERE case_id = :i"), {"i": old})
    purge(svc, NOW, DEFAULT_KEEP_DAYS)
    with Session(svc.engine) as s:
        assert "old@example.jp" in s.exec(select(Event.detail)).one()
        ack = s.exec(select(Outbox).where(Outbox.kind == "ack")).one()
    assert "old@example.jp" in (ack.last_error or "")


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements run on ``engine`` meanwhile (an executemany counts once)."""
    seen: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


def _reply_writes(svc: Service, cases: int) -> tuple[list[str], list[str]]:
    """The UPDATEs of the outbox and the events made by a first purge of ``cases`` old
    refused cases, and by a second purge right after it."""
    for i in range(cases):
        refused_ack(svc, OLD + timedelta(minutes=i), f"r{i}@example.jp")
    runs: list[list[str]] = []
    for _ in range(2):
        with statements(svc.engine) as seen:
            purge(svc, NOW, DEFAULT_KEEP_DAYS)
        runs.append(
            [q.split(" WHERE ")[0] for q in seen if q.startswith(("UPDATE outbox", "UPDATE event"))]
        )
        with Session(svc.engine) as s:
            assert all((r.last_error or "").startswith("purged; ") for r in s.exec(select(Outbox)))
            assert all(d.startswith("purged; ") for d in s.exec(select(Event.detail)))
    return runs[0], runs[1]


def test_purge_reduces_many_replies_with_as_many_statements_as_a_few_and_then_none(
    tmp_path: Path,
) -> None:
    (tmp_path / "few").mkdir()
    (tmp_path / "many").mkdir()
    few, _ = _reply_writes(offline_service(tmp_path / "few"), 3)
    many, again = _reply_writes(offline_service(tmp_path / "many"), 40)
    assert many == few and len(few) == 4, few  # content, recipients, replies, events
    # Nothing left to reduce: no reply is selected or written again (the two UPDATEs of
    # the mail and the address run, and match no row).
    assert again == ["UPDATE outbox SET content=?", "UPDATE outbox SET recipients=?"]


@pytest.mark.parametrize(
    ("reply", "kept"),
    [
        (f"refused: [550] {REFUSAL}", "purged; refused: 550 5.1.1"),
        ("554 5.7.1 <taro550@example.jp>: rejected", "purged; 554 5.7.1"),
        (
            "gave up after 1 day, 0:00:00: refused: [451] 451 4.7.1 <a@example.jp> later",
            "purged; gave up: 451 4.7.1",
        ),
        (
            "delivery in doubt after 2 resends; may have arrived: in doubt: x",
            "purged; delivery in doubt",
        ),
        ("250 2.0.0 Ok: queued as 4XyZ", "purged; 250 2.0.0"),
        ("SMTPServerDisconnected", "purged; no reply code"),
        ("purged; refused: 550 5.1.1", "purged; refused: 550 5.1.1"),
        (None, None),
        ("", ""),
    ],
)
def test_a_reply_is_reduced_to_our_label_and_its_codes(reply: str | None, kept: str | None) -> None:
    assert reply_codes_only(reply) == kept
