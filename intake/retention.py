"""Retention: remove what residents wrote once it is older than the retention period.

Contract. ``purge(svc, now, keep_days) -> int`` blanks, for every message received before
``now - keep_days``: the raw bytes, subject, body, quoted-free text, sender address and
Message-ID. For the cases whose every message is that old it blanks the sender, the
phone numbers, staff notes and the words quoted as triage evidence (rule ids are kept).
For outbox rows created before the cut-off and done (sent or failed; a queued or
sending row may still go out) it removes the rendered mail, for acknowledgements the
resident's address, and reduces the server's replies (``last_error``, ``smtp_response``)
to our label and the reply codes (``purged; refused: 550 5.1.1``): a refusal quotes the
address it refused. The ``failed:<kind>`` events of this mailbox's cases older than the
cut-off, whose detail is that reply, are reduced the same way. Returns how many messages
were purged; running it again purges nothing more.

What it keeps, so ``monthly_report`` gives the same figures before and after: case
topic, partner, status, urgency, dates; outbox kinds and times; the audit events (who did
what, when; the replies as codes); and a keyed hash of each sender (``report.SenderMark``,
written before the address is blanked) for new-versus-returning. The SHA-256 of the raw
mail stays too: it only lets the worker recognise the same mail fetched again, it cannot
be read back. Staff addresses stay where they are (recipients of alerts and digests, the
actor and detail of staff replies and commands): they are not residents'.

Cost: each table is changed by a fixed number of statements (one UPDATE for the
messages, three for the outbox, one executemany for the events), and replies already
reduced are not selected again; only the old cases are still read one by one (their
evidence is JSON).

The period: ``purge --days N``, else ``keep_days`` under ``[retention]`` in the config,
else ``DEFAULT_KEEP_DAYS``. The worker should run ``purge`` once a day.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, and_, bindparam, func, or_, update
from sqlmodel import Session, SQLModel, col, select

from intake.errors import ConfigError
from intake.escalate import utc
from intake.report import SenderMark, mark_senders, sender_salt
from intake.staff import CaseNote
from intake.store import Case, Event, Outbox, StoredMessage, session_scope

if TYPE_CHECKING:
    from intake.config import Settings
    from intake.pipeline import Service

log = logging.getLogger(__name__)

DEFAULT_KEEP_DAYS = 365
# ``ack-retry``: an acknowledgement's follow-up row (``intake.send``), same address.
PURGED_KINDS_WITH_RESIDENT_ADDRESS = ("ack", "ack-retry")


def retention_days(settings: Settings) -> int:
    """``[retention] keep_days`` from the config (validated on load), else ``DEFAULT_KEEP_DAYS``."""
    return settings.retention_days


def _without_surfaces(evidence: str) -> str:
    """Triage evidence minus the resident's words: keep which rule fired, not what was said."""
    try:
        items = json.loads(evidence)
    except ValueError:
        return "[]"
    keep = ("rule", "kind", "topic", "discounted")
    return json.dumps(
        [{k: m[k] for k in keep if k in m} for m in items if isinstance(m, dict)],
        ensure_ascii=False,
    )


# What purge leaves of a mail server's reply (``outbox.last_error``, ``outbox.smtp_response``
# and the detail of ``failed:<kind>`` events): our own label and the reply codes. The text
# goes: a refusal quotes the resident's address ("550 5.1.1 <taro@...>: Recipient address
# rejected"), and ``some recipients refused:`` names every refused address itself.
PURGED_REPLY = "purged; "
# The labels ``intake.send`` puts before a reply (its own words, never the server's).
_LABEL = re.compile(
    r"^(some recipients refused|refused|gave up|delivery in doubt|in doubt|in-doubt resend"
    r"|connection lost|server defers|session refused|connect|reconnects exhausted"
    r"|content handed over|error)\b"
)
# RFC 5321 reply codes (550) and RFC 3463 enhanced codes (5.1.1), standing alone: not the
# digits of an address ("taro550@", "<550@...>") nor of a time ("1 day, 0:15:00").
_CODE = re.compile(r"(?<![\w.@<:-])(?:[245]\d\d|[245]\.\d{1,3}\.\d{1,3})(?![\w.@>:-])")


def reply_codes_only(text: str | None) -> str | None:
    """``text`` reduced to what may outlive the retention period: label and reply codes.

    ``"refused: [550] 550 5.1.1 <taro@example.jp>: ..."`` -> ``"purged; refused: 550 5.1.1"``.
    The result starts with ``PURGED_REPLY``, so a second purge recognises it in SQL and
    leaves it (and the result of reducing it again is itself). ``None``/``""`` stay.
    """
    if not text or text.startswith(PURGED_REPLY):
        return text
    label = _LABEL.match(text)
    codes = " ".join(dict.fromkeys(_CODE.findall(text)))
    if label and codes:
        return f"{PURGED_REPLY}{label.group(1)}: {codes}"
    return PURGED_REPLY + ((label.group(1) if label else codes) or "no reply code")


def _purge_messages(session: Session, mailbox: str, cutoff: datetime) -> int:
    """One UPDATE: the mail of every old message that still has any; returns how many.

    A row stored but never processed (``received``: a crash between the two
    transactions) is kept: no person has seen it yet (``pipeline._sweep`` will).
    """
    m = StoredMessage
    result = session.execute(
        update(m)
        .where(
            col(m.mailbox) == mailbox,
            col(m.received_at) < cutoff,
            col(m.status) != "received",
            or_(
                col(m.raw).is_not(None),
                col(m.subject) != "",
                col(m.body) != "",
                col(m.new_text) != "",
                col(m.from_addr) != "",
            ),
        )
        .values(raw=None, subject="", body="", new_text="", from_addr="", message_id=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _purge_cases(session: Session, mailbox: str, cutoff: datetime) -> None:
    """Blank the sender, phones, evidence words and notes of cases whose every mail is old."""
    recent_cases = set(
        session.exec(
            select(StoredMessage.case_id).where(
                StoredMessage.mailbox == mailbox,
                StoredMessage.received_at >= cutoff,
            )
        ).all()
    )
    for case in session.exec(
        select(Case).where(Case.mailbox == mailbox, Case.created_at < cutoff)
    ).all():
        if case.id in recent_cases:
            continue  # a follow-up inside the period keeps the case readable
        case.sender = ""
        case.phone = "[]"
        case.urgent_reasons = _without_surfaces(case.urgent_reasons)
        case.matches = _without_surfaces(case.matches)
        for note in session.exec(select(CaseNote).where(CaseNote.case_id == case.id)):
            note.text = ""


def _not_reduced(column: Any) -> Any:
    """SQL: ``column`` still holds text that ``reply_codes_only`` has not reduced."""
    return and_(column.is_not(None), column != "", ~column.startswith(PURGED_REPLY))


def _purge_outbox(session: Session, mailbox: str, cutoff: datetime) -> None:
    """Old rows that are done (sent or failed): rendered mail, a resident's address, replies.

    A ``sending`` row is left alone like a ``queued`` one: a sender that died with it
    may resend it (``intake.send``), and it must not send an empty mail or lose its
    ``in doubt`` mark. The replies need Python (a regular expression) but are written
    back by one executemany UPDATE, and a reduced reply is not selected again.
    """
    done = (
        col(Outbox.mailbox) == mailbox,
        col(Outbox.created_at) < cutoff,
        col(Outbox.status).in_(("sent", "failed")),
    )
    quiet = {"synchronize_session": False}
    session.execute(
        update(Outbox)
        .where(*done, func.length(Outbox.content) > 0)
        .values(content=b"")
        .execution_options(**quiet)
    )
    session.execute(
        update(Outbox)
        .where(
            *done,
            col(Outbox.kind).in_(PURGED_KINDS_WITH_RESIDENT_ADDRESS),
            col(Outbox.recipients) != "[]",
        )
        .values(recipients="[]")
        .execution_options(**quiet)
    )
    replies = session.execute(
        select(Outbox.id, Outbox.last_error, Outbox.smtp_response).where(
            *done,
            or_(_not_reduced(col(Outbox.last_error)), _not_reduced(col(Outbox.smtp_response))),
        )
    ).all()
    if replies:
        table: Table = Outbox.__table__  # type: ignore[attr-defined]
        session.connection().execute(
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values(last_error=bindparam("error"), smtp_response=bindparam("response")),
            [
                {
                    "row_id": row_id,
                    "error": reply_codes_only(error),
                    "response": reply_codes_only(response),
                }
                for row_id, error, response in replies
            ],
        )


def _purge_failure_events(session: Session, mailbox: str, cutoff: datetime) -> None:
    """``failed:<kind>`` events older than the cut-off, of this mailbox's cases: codes only.

    Their detail is the server's reply (``intake.send._fail``), which may name the
    resident. Such an event is about a row created before it, so a failed row that
    ``_purge_outbox`` reduced; nothing reads these details but people (``show``).
    Events without a case (a failed digest) name partners, not residents, and belong to
    no mailbox one could tell: left as they are.
    """
    events = session.execute(
        select(Event.id, Event.detail).where(
            col(Event.kind).startswith("failed:"),
            col(Event.at) < cutoff,
            col(Event.case_id).in_(select(Case.id).where(col(Case.mailbox) == mailbox)),
            _not_reduced(col(Event.detail)),
        )
    ).all()
    if events:
        table: Table = Event.__table__  # type: ignore[attr-defined]
        session.connection().execute(
            update(table)
            .where(table.c.id == bindparam("event_id"))
            .values(detail=bindparam("text")),
            [{"event_id": i, "text": reply_codes_only(detail)} for i, detail in events],
        )


def purge(svc: Service, now: datetime, keep_days: int) -> int:
    """Blank personal content older than ``keep_days`` before ``now``; returns messages purged.

    Bounded: the messages, the outbox and the events are each changed by a fixed number
    of statements whatever their count; only reductions not yet made are selected.
    """
    if keep_days < 1:
        raise ConfigError(f"keep_days must be at least 1, got {keep_days}")
    cutoff = utc(now) - timedelta(days=keep_days)
    salt = sender_salt(svc.settings)
    key = svc.settings.mailbox.key
    SQLModel.metadata.create_all(
        svc.engine,
        tables=[SenderMark.__table__, CaseNote.__table__],  # type: ignore[attr-defined]
    )
    with session_scope(svc.engine) as session:
        mark_senders(session, salt, key)  # before any address is blanked
        purged = _purge_messages(session, key, cutoff)
        _purge_cases(session, key, cutoff)
        _purge_outbox(session, key, cutoff)
        _purge_failure_events(session, key, cutoff)
    _drop_old_copies(svc)
    log.info("purge finished", extra={"purged": purged, "keep_days": keep_days})
    return purged


def _drop_old_copies(svc: Service) -> None:
    """SQLite: move the purge out of the write-ahead log and empty it.

    Why: the WAL keeps the pages as they were before the purge until they are copied
    back and overwritten; a running worker never closes its connections, so its WAL
    still held the purged mail (review rv9b F3). A checkpoint with TRUNCATE writes the
    purge into the file (``secure_delete`` zeroes what it frees: ``store``) and truncates
    the WAL. A reader that holds an old snapshot makes it partial (busy): it is said,
    and the next purge (daily in the worker) finishes it.
    """
    if svc.engine.dialect.name != "sqlite":
        return
    with svc.engine.connect() as conn:
        busy, _log_frames, _done = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    if busy:
        log.warning("purge: the write-ahead log could not be emptied now (a reader holds it)")


__all__ = ["DEFAULT_KEEP_DAYS", "PURGED_REPLY", "purge", "reply_codes_only", "retention_days"]
