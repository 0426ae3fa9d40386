"""Retention: remove what residents wrote once it is older than the retention period.

Contract. ``purge(svc, now, keep_days) -> int`` blanks, for every message received before
``now - keep_days``: the raw bytes, subject, body, quoted-free text, sender address and
Message-ID. For the cases whose every message is that old it blanks the sender, the
phone numbers, staff notes and the words quoted as triage evidence (rule ids are kept).
For outbox rows created before the cut-off and no longer queued it removes the rendered
mail, and for acknowledgements the resident's address. Returns how many messages were
purged; running it again purges nothing more.

What it keeps, so ``monthly_report`` gives the same figures before and after: case
topic, partner, status, urgency, dates; outbox kinds and times; the audit events (who did
what, when); and a keyed hash of each sender (``report.SenderMark``, written before the
address is blanked) for new-versus-returning. The SHA-256 of the raw mail stays too: it
only lets the worker recognise the same mail fetched again, it cannot be read back.

The period: ``purge --days N``, else ``keep_days`` under ``[retention]`` in the config,
else ``DEFAULT_KEEP_DAYS``. The worker should run ``purge`` once a day.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlmodel import SQLModel, col, select

from intake.errors import ConfigError
from intake.escalate import utc
from intake.report import SenderMark, mark_senders, sender_salt
from intake.staff import CaseNote
from intake.store import Case, Outbox, StoredMessage, session_scope

if TYPE_CHECKING:
    from intake.config import Settings
    from intake.pipeline import Service

log = logging.getLogger(__name__)

DEFAULT_KEEP_DAYS = 365
PURGED_KINDS_WITH_RESIDENT_ADDRESS = ("ack",)


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


def purge(svc: Service, now: datetime, keep_days: int) -> int:
    """Blank personal content older than ``keep_days`` before ``now``; returns messages purged."""
    if keep_days < 1:
        raise ConfigError(f"keep_days must be at least 1, got {keep_days}")
    cutoff = utc(now) - timedelta(days=keep_days)
    salt = sender_salt(svc.settings)
    SQLModel.metadata.create_all(
        svc.engine,
        tables=[SenderMark.__table__, CaseNote.__table__],  # type: ignore[attr-defined]
    )
    purged = 0
    with session_scope(svc.engine) as session:
        mark_senders(session, salt, svc.settings.mailbox.key)  # before any address is blanked
        old = session.exec(
            select(StoredMessage).where(
                StoredMessage.mailbox == svc.settings.mailbox.key,
                StoredMessage.received_at < cutoff,
            )
        ).all()
        for msg in old:
            if msg.status == "received":
                # Stored but never processed (a crash between the two transactions): no
                # person has seen it yet, so it is kept until the pipeline has (``_sweep``).
                continue
            if msg.raw is None and not (msg.body or msg.subject or msg.new_text or msg.from_addr):
                continue
            msg.raw = None
            msg.subject = msg.body = msg.new_text = msg.from_addr = ""
            msg.message_id = None
            purged += 1
        recent_cases = set(
            session.exec(
                select(StoredMessage.case_id).where(
                    StoredMessage.mailbox == svc.settings.mailbox.key,
                    StoredMessage.received_at >= cutoff,
                )
            ).all()
        )
        for case in session.exec(
            select(Case).where(Case.mailbox == svc.settings.mailbox.key, Case.created_at < cutoff)
        ).all():
            if case.id in recent_cases:
                continue  # a follow-up inside the period keeps the case readable
            case.sender = ""
            case.phone = "[]"
            case.urgent_reasons = _without_surfaces(case.urgent_reasons)
            case.matches = _without_surfaces(case.matches)
            for note in session.exec(select(CaseNote).where(CaseNote.case_id == case.id)):
                note.text = ""
        for row in session.exec(
            select(Outbox).where(
                Outbox.mailbox == svc.settings.mailbox.key,
                Outbox.created_at < cutoff,
                col(Outbox.status) != "queued",
            )
        ).all():
            row.content = b""
            if row.kind in PURGED_KINDS_WITH_RESIDENT_ADDRESS:
                row.recipients = "[]"
    log.info("purge finished", extra={"purged": purged, "keep_days": keep_days})
    return purged


__all__ = ["DEFAULT_KEEP_DAYS", "purge", "retention_days"]
