"""Send: deliver the outbox over SMTP with aiosmtplib, alerts first.

The outbox pattern: mail is written to the database in the same transaction as the
change that caused it, with its Message-ID fixed at creation; this module only delivers.
A row is marked sent in its own small commit right after the server accepts it. The one
remaining window is "server said 250, commit not yet written": a crash exactly there sends
that one mail again on restart (SMTP has no idempotency key). The window is one local
commit long, and the fixed Message-ID lets a receiving client fold the duplicate.

Failures: a 4xx or a dropped connection keeps the row queued with exponential backoff
(persisted, so it survives restarts); a 5xx for every recipient marks it failed and, for an
acknowledgement, marks the case ``ack_failed`` so staff see it and can phone instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiosmtplib
from sqlalchemy.engine import Engine
from sqlmodel import select

from intake.config import SmtpSettings
from intake.fetch import tls_context
from intake.store import Case, Outbox, record_event, session_scope, to_db

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
        start_tls=True if s.security == "starttls" else False,
        tls_context=context,
        timeout=s.timeout,
    )


async def _deliver(settings: SmtpSettings, engine: Engine, now: datetime) -> SendReport:
    report = SendReport()
    with session_scope(engine) as session:
        due = session.exec(
            select(Outbox)
            .where(Outbox.status == "queued", Outbox.next_attempt_at <= now)
            .order_by(Outbox.priority, Outbox.id)  # type: ignore[arg-type]
        ).all()
        jobs = [(row.id, json.loads(row.recipients), row.content) for row in due]
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
    try:
        for index, (row_id, recipients, content) in enumerate(jobs):
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
            _mark_sent(engine, row_id, response, errors, now)
            report.sent += 1
    finally:
        try:
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()
    return report


def _mark_sent(
    engine: Engine, row_id: int | None, response: str, errors: dict[str, object], now: datetime
) -> None:
    with session_scope(engine) as session:
        row = session.get(Outbox, row_id)
        if row is None:
            return
        row.status = "sent"
        row.sent_at = now
        row.attempts += 1
        row.smtp_response = response[:500]
        if errors:
            row.last_error = f"some recipients refused: {sorted(errors)}"[:500]
        if row.kind == "ack" and row.case_id:
            case = session.get(Case, row.case_id)
            if case and case.ack_state in ("pending", "queued"):
                case.ack_state = "sent"
        record_event(session, f"sent:{row.kind}", row.case_id, f"outbox {row.id}")


def _defer(engine: Engine, row_ids: list[int | None], why: str, now: datetime) -> None:
    with session_scope(engine) as session:
        for row_id in row_ids:
            row = session.get(Outbox, row_id)
            if row is None:
                continue
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
        record_event(session, f"failed:{row.kind}", row.case_id, why[:200])


def deliver_outbox(settings: SmtpSettings, engine: Engine, now: datetime) -> SendReport:
    """Deliver every due outbox row (alerts first); safe to call from sync code."""
    with _DELIVERY_LOCK:
        return asyncio.run(_deliver(settings, engine, to_db(now)))
