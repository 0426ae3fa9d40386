"""Send: deliver the outbox over SMTP with aiosmtplib, alerts first.

The outbox pattern: mail is written to the database in the same transaction as the
change that caused it, with its Message-ID fixed at creation; this module only delivers.
Each row is marked ``sending`` (committed) just before it is handed to the server and
``sent`` in one short Core transaction right after the server's 250. The remaining window
is "server accepted, commit not yet written": SMTP has no idempotency key, so a crash
exactly there leaves the row ``sending``; the next run resends it and records an
``in-doubt-resend`` event, so every possible duplicate is accounted for. We resend rather
than drop because a resident or on-call person who never hears from us is worse than one
repeated mail; the fixed Message-ID lets a mail client fold the duplicate.

Failures: a 4xx or a dropped connection keeps the row queued with exponential backoff
(persisted, so it survives restarts); a 5xx for every recipient marks it failed and, for an
acknowledgement, marks the case ``ack_failed`` so staff see it and can phone instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiosmtplib
from sqlalchemy import delete, insert, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col, select

from intake.config import SmtpSettings
from intake.fetch import tls_context
from intake.store import (
    Case,
    DigestEntry,
    Event,
    Outbox,
    from_db,
    record_event,
    session_scope,
    to_db,
)

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(hours=1)
# One deliverer per process: the worker loop and the scheduler's retry job both call
# deliver_outbox, and two deliverers reading the same queued row would send it twice.
_DELIVERY_LOCK = threading.Lock()
FIRST_BACKOFF = timedelta(seconds=30)


@dataclass
class SendReport:
    sent: int = 0
    deferred: int = 0
    failed: int = 0


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, ... capped at one hour."""
    return min(FIRST_BACKOFF * (2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def _client(s: SmtpSettings) -> aiosmtplib.SMTP:
    context: ssl.SSLContext | None = tls_context(s.cafile) if s.security != "plain" else None
    return aiosmtplib.SMTP(
        hostname=s.host,
        port=s.port,
        use_tls=s.security == "tls",
        start_tls=s.security == "starttls",
        tls_context=context,
        timeout=s.timeout,
    )


def _boot_id() -> str:
    """Changes at every reboot: a claim from before a reboot is dead even if its pid is reused."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()[:8]
    except OSError:
        return "noboot"


WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}:{_boot_id()}"
STALE_CLAIM = timedelta(minutes=10)


def claim_is_dead(claimed_by: str | None, claimed_at: datetime | None, now: datetime) -> bool:
    """Whether the sender that marked a row ``sending`` can no longer finish it.

    Dead: our own earlier claim, any claim older than a single SMTP transaction could take
    (10 minutes), a claim from before this host's last reboot, or from a process on this
    host that no longer exists. Otherwise a live worker is sending it right now.
    """
    if not claimed_by or claimed_by == WORKER_ID:
        return True
    at = from_db(claimed_at)
    if at is None or at < now - STALE_CLAIM:
        return True
    host, pid, _start, boot = ([*claimed_by.split(":"), "", "", ""])[:4]
    if host != socket.gethostname():
        return False
    if boot and boot != _boot_id():
        return True
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return True
    except PermissionError:
        return False
    return False


def _claim(conn: Connection, row_id: int | None, previous: str | None, now: datetime) -> bool:
    """Take a row for sending; False when another worker took it first (portable CAS)."""
    taken_over = (Outbox.status == "sending") & (
        Outbox.claimed_by == previous if previous else Outbox.claimed_by.is_(None)  # type: ignore[union-attr]
    )
    with conn.begin():
        result = conn.execute(
            update(Outbox)
            .where(Outbox.id == row_id, (Outbox.status == "queued") | taken_over)  # type: ignore[arg-type]
            .values(status="sending", claimed_by=WORKER_ID, claimed_at=now)
        )
    return result.rowcount == 1


async def _deliver(
    settings: SmtpSettings, engine: Engine, now: datetime, mailbox: str | None = None
) -> SendReport:
    report = SendReport()
    with session_scope(engine) as session:
        query = select(Outbox).where(
            (col(Outbox.status) == "queued") & (Outbox.next_attempt_at <= now)
            | (col(Outbox.status) == "sending")
        )
        if mailbox is not None:
            query = query.where(Outbox.mailbox == mailbox)
        due = session.exec(query.order_by(Outbox.priority, Outbox.id)).all()  # type: ignore[arg-type]
        jobs = []
        for row in due:
            if row.status == "sending":
                if not claim_is_dead(row.claimed_by, row.claimed_at, now):
                    continue  # another live worker is sending it right now
                # In doubt: a sender died between handing this mail to the server and
                # recording the answer. Sending again risks one duplicate; not sending risks
                # a resident or the on-call person never hearing from us. Resend, and say so.
                record_event(
                    session, f"in-doubt-resend:{row.kind}", row.case_id, f"outbox {row.id}"
                )
                log.warning(
                    "resending a mail whose delivery is in doubt",
                    extra={"outbox": row.id, "kind": row.kind},
                )
            jobs.append(
                (
                    row.id,
                    row.kind,
                    row.case_id,
                    json.loads(row.recipients),
                    row.content,
                    row.claimed_by if row.status == "sending" else None,
                )
            )
    if not jobs:
        return report
    smtp = _client(settings)
    try:
        await smtp.connect()
        if settings.username:
            await smtp.login(settings.username, settings.password.get() or "")
    except (aiosmtplib.SMTPException, OSError) as exc:
        log.warning("smtp unavailable: %s: %s", type(exc).__name__, exc)
        _defer(engine, [j[0] for j in jobs], f"connect: {type(exc).__name__}", now)
        report.deferred = len(jobs)
        return report
    conn = engine.connect()
    try:
        for index, (row_id, kind, case_id, recipients, content, previous) in enumerate(jobs):
            if not _claim(conn, row_id, previous, now):
                continue
            try:
                errors, response = await smtp.sendmail(settings.from_address, recipients, content)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                codes = [r.code for r in exc.recipients]
                if all(500 <= c < 600 for c in codes):
                    _fail(engine, row_id, f"refused: {codes}", now)
                    report.failed += 1
                else:
                    _defer(engine, [row_id], f"refused: {codes}", now)
                    report.deferred += 1
                continue
            except aiosmtplib.SMTPResponseException as exc:
                if 500 <= exc.code < 600:
                    _fail(engine, row_id, f"{exc.code} {exc.message}", now)
                    report.failed += 1
                    continue
                _defer(engine, [row_id], f"{exc.code} {exc.message}", now)
                report.deferred += 1
                continue
            except (aiosmtplib.SMTPException, OSError) as exc:
                # Connection lost: this row and the rest wait for the next run.
                rest = [j[0] for j in jobs[index:]]
                _defer(engine, rest, f"{type(exc).__name__}", now)
                report.deferred += len(rest)
                break
            _mark_sent(conn, row_id, kind, case_id, response, errors, now)
            report.sent += 1
    finally:
        conn.close()
        try:
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()
    return report


def _mark_sent(
    conn: Connection,
    row_id: int | None,
    kind: str,
    case_id: int | None,
    response: str,
    errors: Mapping[str, object],
    now: datetime,
) -> None:
    """Record the server's 250 as fast as possible: the crash window is exactly this call.

    Core statements on a connection held open for the whole run (no ORM load, no new
    connection), so the time between "server accepted" and "commit written" is a single
    short local transaction.
    """
    values: dict[str, object] = {
        "status": "sent",
        "sent_at": now,
        "attempts": Outbox.attempts + 1,
        "smtp_response": response[:500],
    }
    if errors:
        values["last_error"] = f"some recipients refused: {sorted(errors)}"[:500]
    with conn.begin():
        conn.execute(update(Outbox).where(Outbox.id == row_id).values(**values))  # type: ignore[arg-type]
        if kind == "ack" and case_id is not None:
            conn.execute(
                update(Case)
                .where(Case.id == case_id, col(Case.ack_state).in_(["pending", "queued"]))  # type: ignore[arg-type]
                .values(ack_state="sent")
            )
        conn.execute(
            insert(Event).values(
                at=now,
                case_id=case_id,
                kind=f"sent:{kind}",
                detail=f"outbox {row_id}",
                actor="service",
            )
        )


def _defer(engine: Engine, row_ids: list[int | None], why: str, now: datetime) -> None:
    with session_scope(engine) as session:
        for row_id in row_ids:
            row = session.get(Outbox, row_id)
            if row is None or (
                row.status == "sending"
                and row.claimed_by != WORKER_ID
                and not claim_is_dead(row.claimed_by, row.claimed_at, now)
            ):
                continue  # a live worker holds it; leave it alone
            row.status = "queued"
            row.attempts += 1
            row.last_error = why[:500]
            row.next_attempt_at = now + backoff(row.attempts)


def _fail(engine: Engine, row_id: int | None, why: str, now: datetime) -> None:
    with session_scope(engine) as session:
        row = session.get(Outbox, row_id)
        if row is None:
            return
        row.status = "failed"
        row.attempts += 1
        row.last_error = why[:500]
        if row.kind == "ack" and row.case_id:
            case = session.get(Case, row.case_id)
            if case:
                case.ack_state = "ack_failed"
                # List the case again in the next digests, now flagged, so that someone
                # phones the resident instead.
                session.execute(delete(DigestEntry).where(col(DigestEntry.case_id) == row.case_id))
        record_event(session, f"failed:{row.kind}", row.case_id, why[:200])


def deliver_outbox(
    settings: SmtpSettings, engine: Engine, now: datetime, mailbox: str | None = None
) -> SendReport:
    """Deliver every due outbox row (alerts first), of one mailbox when given.

    Safe to call from several threads and several worker processes: each row is claimed
    with a compare-and-set update before it is handed to the server.
    """
    with _DELIVERY_LOCK:
        return asyncio.run(_deliver(settings, engine, to_db(now), mailbox))
