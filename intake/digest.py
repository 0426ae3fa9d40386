"""Digest: each partner gets one mail listing its messages not yet sent to it.

"Since its last digest" is not a timestamp but a fact in the database: a ``DigestEntry``
row per (partner, message), unique, written in the same transaction as the digest's
outbox row. So a message is listed exactly once per partner, across restarts, and a
digest with nothing new is never created.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from sqlmodel import col, select

from intake.compose import excerpt, render_digest
from intake.partners import Partner
from intake.pipeline import Service, queue_mail
from intake.store import (
    Case,
    DigestEntry,
    StoredMessage,
    from_db,
    record_event,
    session_scope,
    to_db,
)

TOPIC_JA = {
    "bullying": "いじめ",
    "poverty": "生活困窮",
    "caregiving": "介護・ケア",
    "isolation": "孤独・孤立",
    "volunteer": "ボランティア",
    "other": "その他・総合",
}


def _concerns(partner: Partner, case: Case) -> bool:
    if partner.id == COORDINATOR_ID or case.partner == partner.id:
        return True
    secondary = {t for t, _s in json.loads(case.topics)[1:]}
    return bool(secondary.intersection(partner.also_notify))


_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
# A run of 10+ digits and separators, half- or full-width: every phone number
# intake.phones finds, written as the resident wrote it.
_PHONE_LIKE = re.compile(r"[0-9０-９][0-9０-９\-‐－−ー()（）\s]{8,}[0-9０-９]")


# A calendar date at the start of such a run (2026-11-26 10時): no phone number starts
# with a 4-digit year, and staff need the date to understand the case.
_DATE_START = re.compile(
    r"(?:19|20|１９|２０)[0-9０-９]{2}[-－][0-9０-９]{1,2}[-－][0-9０-９]{1,2}(?![0-9０-９])"
)


def _mask_phone(m: re.Match[str]) -> str:
    run = m.group()
    date = _DATE_START.match(run)
    if date is None:
        return "［電話番号］"
    # keep the date, still mask a number written right after it
    return run[: date.end()] + _PHONE_LIKE.sub(_mask_phone, run[date.end() :])


def redact_contact(text: str) -> str:
    """Mask phone numbers and mail addresses for partners not allowed to see the sender's."""
    return _EMAIL.sub("［メールアドレス］", _PHONE_LIKE.sub(_mask_phone, text))


def _entry(partner: Partner, msg: StoredMessage, case: Case) -> dict[str, Any]:
    reasons = [f"「{r['surface']}」" for r in json.loads(case.urgent_reasons)]
    # The sender's own words only: the whole body may quote our mails (with the resident's
    # address) or an earlier message.
    text = msg.new_text or (
        "（本文を読み取れませんでした）" if case.needs_human else "（本文なし）"
    )
    return {
        "number": case.number,
        "received": from_db(msg.received_at),
        "followup": msg.is_followup,
        "topic_ja": TOPIC_JA.get(case.topic, case.topic),
        "secondary": [TOPIC_JA.get(t, t) for t, _s in json.loads(case.topics)[1:]],
        "urgent": case.urgent,
        "reasons": reasons,
        "ack_failed": case.ack_state == "ack_failed",
        "needs_human": case.needs_human,
        "sender": case.sender if partner.show_sender else "",
        "phones": json.loads(case.phone or "[]") if partner.show_sender else [],
        "text": _shared_text(partner, text),
    }


COORDINATOR_ID = "coordinator"


def coordinator(svc: Service) -> Partner | None:
    """The city coordinator's overview: every case, in full, when ``[service] coordinator``
    names recipients. Modelled as a partner that concerns everything."""
    if not svc.settings.coordinator:
        return None
    desk = svc.directory.general_desk
    return Partner(
        id=COORDINATOR_ID,
        name="笠岡市 孤独・孤立対策 コーディネーター（全件）",
        topics=(),
        digest_to=tuple(svc.settings.coordinator),
        phone=desk.phone,
        hours=desk.hours,
        share="full",
        show_sender=True,
    )


def digest_times(svc: Service, partner: Partner) -> tuple[str, ...]:
    """When a partner's digest goes out: its own ``digest_times`` or the service default."""
    return partner.digest_times or svc.settings.digest_times


def _shared_text(partner: Partner, text: str) -> str:
    if not partner.show_sender:
        text = redact_contact(text)
    return text if partner.share == "full" else excerpt(text)


def queue_digests(svc: Service, now: datetime, at: str | None = None) -> dict[str, int]:
    """Queue one digest per partner with new messages; returns {partner id: messages listed}.

    ``at`` ("HH:MM") limits it to the partners scheduled at that time (the scheduled job);
    without it every partner is considered (the ``digest`` command).
    """
    queued: dict[str, int] = {}
    overview = coordinator(svc)
    for partner in [*svc.directory.partners, *([overview] if overview else [])]:
        if at is not None and at not in digest_times(svc, partner):
            continue
        with session_scope(svc.engine) as session:
            done = select(DigestEntry.message_row).where(DigestEntry.partner == partner.id)
            rows = session.exec(
                select(StoredMessage, Case)
                .join(Case, col(StoredMessage.case_id) == col(Case.id))
                .where(
                    StoredMessage.mailbox == svc.settings.mailbox.key,
                    col(StoredMessage.status).in_(["processed", "quarantined"]),
                    col(StoredMessage.id).not_in(done),
                )
                .order_by(col(StoredMessage.id))
            ).all()
            mine = [(m, c) for m, c in rows if _concerns(partner, c)]
            if not mine:
                continue
            entries = [_entry(partner, m, c) for m, c in mine]
            message = render_digest(
                svc.env,
                sender=svc.sender,
                partner=partner,
                entries=entries,
                now=now,
                tz=svc.calendar.tz,
            )
            row = queue_mail(
                session,
                kind="digest",
                key=f"digest:{partner.id}:{mine[0][0].id}-{mine[-1][0].id}:{to_db(now).isoformat()}",
                case=None,
                to=list(partner.digest_to),
                message=message,
                priority=5,
                now=now,
                partner=partner.id,
                mailbox=svc.settings.mailbox.key,
            )
            session.flush()
            assert row.id is not None
            for m, c in mine:
                assert m.id is not None and c.id is not None
                session.add(
                    DigestEntry(
                        partner=partner.id,
                        message_row=m.id,
                        case_id=c.id,
                        outbox_id=row.id,
                        created_at=to_db(now),
                    )
                )
                record_event(session, "digest", c.id, f"partner {partner.id}")
            queued[partner.id] = len(mine)
    return queued
