"""The long-running worker: IMAP IDLE (or polling) for new mail, APScheduler for the rest.

This module and the scheduler are the only places that read the clock; every stage gets
``now`` as a parameter. Jobs are declared in one list (``schedule_jobs``). SIGTERM, SIGINT
and SIGHUP stop the worker cleanly: the current batch finishes its transaction, a delivery
run ends before its next mail (the rest stays queued), the IMAP connection is logged out,
the scheduler is shut down. (SIGHUP too: an ssh session that drops, or a ``systemctl kill
-s HUP`` / logrotate habit, would otherwise kill it mid-SMTP.)
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select

from intake.digest import coordinator, digest_times, queue_digests
from intake.errors import MailboxError
from intake.fetch import Mailbox, _transient
from intake.locks import mailbox_lock
from intake.logs import describe_error
from intake.pipeline import RunReport, Service, process_new_mail
from intake.send import SendReport
from intake.store import Outbox, session_scope, to_db

log = logging.getLogger(__name__)

RECONNECT_MIN = 1.0
RECONNECT_MAX = 300.0
# A mailbox failure that may go away by itself (network, a server restarting) is logged
# at ERROR once it has lasted this long; one that will not (login refused, folder
# missing, certificate not trusted) at once. Then at most every ERROR_EVERY seconds.
ERROR_AFTER = 5 * 60.0
ERROR_EVERY = 30 * 60.0
# A digest slot is still sent this late: by APScheduler to a worker that was busy at the
# slot (misfire_grace_time), by ``catch_up_digests`` to one that was not running.
DIGEST_GRACE = timedelta(hours=1)


def lasting_failure(exc: BaseException) -> bool:
    """Will this mailbox failure stay until someone changes something (password, folder,
    certificate, server configuration)? Only what ``Mailbox.open`` reports: the server
    refused the login, the certificate, or the folder (a NO, not a dropped connection).

    A temporary answer is never lasting, a refused login included: Dovecot answers
    ``NO [UNAVAILABLE] Temporary authentication failure`` while its auth process restarts
    (``systemctl reload dovecot``); calling that lasting paged the operator for nothing
    and used up the ERROR slot a real lasting failure would need."""
    if not isinstance(exc, MailboxError) or _transient(exc):
        return False
    cause = exc.__cause__
    if isinstance(cause, (LoginError, ssl.SSLCertVerificationError)):
        return True
    return (
        isinstance(cause, IMAPClientError)
        and not isinstance(cause, IMAPClientAbortError)
        and not _transient(exc)
    )


def failure_reason(exc: BaseException) -> str:
    """What an operator needs to fix a mailbox failure. A ``MailboxError``'s text names
    host, port, security, user, folder and the server's answer, never the password (the
    login call gets it; the server's refusal does not repeat it); other errors here are
    the server's or the socket's own words about a command, never mail content."""
    return str(exc) if isinstance(exc, MailboxError) else f"{type(exc).__name__}: {exc}"


def now_in(svc: Service) -> datetime:
    return datetime.now(svc.calendar.tz)


# The worker's stop flag as its jobs ask it (``threading.Event.is_set``); None: never stop.
StopCheck = Callable[[], bool] | None


def deliver(svc: Service, now: datetime, should_stop: StopCheck = None) -> SendReport:
    """This mailbox's due outbox rows, as ``Service.deliver``, ended early once the
    worker is stopping.

    Why: a delivery run sends every due row before it returns, each up to ``[smtp]
    timeout`` per step with a slow relay, and the worker only stopped afterwards; a
    queue of acknowledgements outlived systemd's TimeoutStopSec, whose SIGKILL then
    landed inside a mail's transaction (an acknowledgement in doubt is never resent).
    With the stop flag the run ends before claiming its next row; the rest stays queued
    for the next start (review rvr, finding 2)."""
    return svc.deliver(now, should_stop)


def digest_job(
    svc: Service,
    now: datetime | None = None,
    at: str | None = None,
    should_stop: StopCheck = None,
) -> dict[str, int]:
    """Scheduled digests run on business days only (holidays, year-end closure skipped),
    for the partners scheduled at ``at``."""
    now = now or now_in(svc)
    if not svc.calendar.is_business_day(now.date()):
        log.info("digest skipped: not a business day", extra={"day": now.date().isoformat()})
        return {}
    queued = queue_digests(svc, now, at)
    log.info("digests queued", extra={"partners": len(queued)})
    deliver(svc, now, should_stop)
    return queued


def alerts_between_batches(
    svc: Service, should_stop: StopCheck = None
) -> Callable[[RunReport], None]:
    """An ``after_batch`` for ``process_new_mail``: deliver the outbox (alerts first) after
    a batch that queued an urgent alert.

    Without it, alerts of a long backlog (after an outage) would wait for the whole
    backlog or the 30-second outbox job; acknowledgements simply go out earlier with them.
    """
    seen = 0

    def after(report: RunReport) -> None:
        nonlocal seen
        if report.alerts > seen:
            seen = report.alerts
            try:
                deliver(svc, now_in(svc), should_stop)
            except Exception as exc:  # the outbox job and the final delivery retry
                log.warning("delivery between batches failed: %s", type(exc).__name__)

    return after


def _slot_times(svc: Service) -> list[str]:
    """Every digest time ("HH:MM") of the service default and of each partner."""
    times = set(svc.settings.digest_times)
    for partner in svc.directory.partners:
        times.update(digest_times(svc, partner))
    return sorted(times)


def catch_up_digests(
    svc: Service, now: datetime | None = None, should_stop: StopCheck = None
) -> list[str]:
    """Send, once, a digest slot of today that passed while the worker was not running;
    return the slots ("HH:MM") sent.

    Why: APScheduler computes each job's next run from the moment it starts, so a restart
    at 14:05 (deploy, rules edit, reboot, crash) skipped the 14:00 digest without a word,
    and on a Friday its cases waited until Monday 09:00; the digest is the safety net for
    urgent mail the triage misses. A slot is caught up when today is a business day, it
    passed less than ``DIGEST_GRACE`` ago, and no digest of a partner scheduled then was
    queued for this mailbox since it. So it is sent at most once: the catch-up queues such
    a row itself (a slot with nothing new queues none, and a later restart finds nothing
    new either), and ``DigestEntry`` never lists a message twice for a partner anyway."""
    tz = svc.calendar.tz
    now = (now or now_in(svc)).astimezone(tz)  # slots are the city's wall-clock times
    if not svc.calendar.is_business_day(now.date()):
        return []
    overview = coordinator(svc)
    partners = [*svc.directory.partners, *([overview] if overview else [])]
    sent: list[str] = []
    for at in _slot_times(svc):
        hour, minute = at.split(":")
        slot = now.replace(hour=int(hour), minute=int(minute), second=0, microsecond=0)
        if not slot < now < slot + DIGEST_GRACE:
            continue
        scheduled = [p.id for p in partners if at in digest_times(svc, p)]
        with session_scope(svc.engine) as session:
            queued = session.exec(
                select(Outbox.id)
                .where(
                    Outbox.mailbox == svc.settings.mailbox.key,
                    Outbox.kind == "digest",
                    col(Outbox.partner).in_(scheduled),
                    col(Outbox.created_at) >= to_db(slot),
                )
                .limit(1)
            ).first()
        if queued is not None:
            continue
        log.info(
            "digest slot passed while the worker was not running; sending it now",
            extra={"slot": at, "late_minutes": round((now - slot).total_seconds() / 60)},
        )
        digest_job(svc, now, at, should_stop)
        sent.append(at)
    return sent


def outbox_job(svc: Service, should_stop: StopCheck = None) -> None:
    deliver(svc, now_in(svc), should_stop)


def escalate_job(svc: Service, should_stop: StopCheck = None) -> None:
    """Unacknowledged urgent alerts go to the backup recipients, repeatedly up to a cap."""
    from intake.escalate import escalate

    now = now_in(svc)
    if escalate(svc, now):
        deliver(svc, now, should_stop)


def purge_job(svc: Service) -> None:
    """Retention: old raw mail and bodies are removed, anonymised figures kept."""
    from intake.retention import purge, retention_days

    purged = purge(svc, now_in(svc), retention_days(svc.settings))
    log.info("retention purge", extra={"messages": purged})


def schedule_jobs(svc: Service, scheduler: Any, stopping: threading.Event | None = None) -> None:
    """Every scheduled job, in one place. ``stopping``: the worker's stop flag, which
    ends a job's delivery run between two mails (``scheduler.shutdown`` waits for it)."""
    tz = svc.calendar.tz
    stop = stopping.is_set if stopping is not None else None
    for at in _slot_times(svc):
        hour, minute = at.split(":")
        scheduler.add_job(
            digest_job,
            CronTrigger(day_of_week="mon-fri", hour=int(hour), minute=int(minute), timezone=tz),
            args=[svc, None, at, stop],
            id=f"digest-{at}",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=int(DIGEST_GRACE.total_seconds()),
        )
    # Once, at start: the slot that passed while the worker was down (a restart at 14:05).
    scheduler.add_job(
        catch_up_digests, args=[svc, None, stop], id="digest-catch-up", max_instances=1
    )
    scheduler.add_job(
        outbox_job,
        "interval",
        seconds=30,
        args=[svc, stop],
        id="outbox",
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        escalate_job,
        "interval",
        seconds=60,
        args=[svc, stop],
        id="escalate",
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        purge_job,
        CronTrigger(hour=3, minute=30, timezone=tz),
        args=[svc],
        id="purge",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=6 * 3600,
    )


class Worker:
    def __init__(self, svc: Service):
        self.svc = svc
        self.stopping = threading.Event()
        # Exactly one worker polls a mailbox; the others still send and run scheduled jobs,
        # and take over when the holder dies (its lock dies with its connection/process).
        self.lock = mailbox_lock(svc.engine, svc.settings.mailbox.key)
        self.failing_since: float | None = None  # monotonic: first failure of this outage
        self.error_logged_at: float | None = None  # monotonic: its last ERROR line
        # Seconds before the next reconnect. Reset only by a poll that went through
        # (``_reachable``), not by a login: a failure after a good login (a NO to SEARCH,
        # a connection reset on one mail) would otherwise log in again and log a WARNING
        # every second for as long as it lasts.
        self.delay = RECONNECT_MIN
        # A database failure in the mail loop: since when, and its last ERROR line.
        self.db_failing_since: float | None = None
        self.db_error_logged_at: float | None = None

    def stop(self, *_args: object) -> None:
        self.stopping.set()

    def run(self) -> None:
        scheduler = BackgroundScheduler(timezone=self.svc.calendar.tz)
        schedule_jobs(self.svc, scheduler, self.stopping)
        scheduler.start()
        try:
            while not self.stopping.is_set():
                try:
                    with Mailbox(self.svc.settings.mailbox) as mailbox:
                        self._serve(mailbox)
                except (MailboxError, IMAPClientError, OSError) as exc:
                    # Another worker may reach the mailbox (another network, a corrected
                    # config): let it poll while this one cannot; it takes the lock back
                    # in ``_serve`` when it is free again.
                    self.lock.release()
                    self._failed(exc, self.delay)
                    self.stopping.wait(self.delay)
                    self.delay = min(self.delay * 2, RECONNECT_MAX)
                except DBAPIError as exc:
                    # "database is locked" (a VACUUM, a backup, a long purge holding the
                    # write lock past busy_timeout), a full disk, a PostgreSQL restart:
                    # nothing was committed, the cursor did not move, the folder is read
                    # only, so the same mail is read again once the database answers.
                    # Backing off like a mailbox failure keeps the scheduler (alerts
                    # already queued, escalations) running; exiting did not.
                    self.lock.release()
                    self._db_failed(exc, self.delay)
                    self.stopping.wait(self.delay)
                    self.delay = min(self.delay * 2, RECONNECT_MAX)
        finally:
            self.lock.release()
            scheduler.shutdown(wait=True)
            self.svc.close()  # the prepare pool's processes, if a large batch started them
            log.info("worker stopped")

    def _failed(self, exc: BaseException, delay: float) -> None:
        """Log a mailbox failure with its reason: at ERROR at once when it will not go
        away by itself, or once it has lasted ``ERROR_AFTER``; then at most every
        ``ERROR_EVERY``, WARNING in between (the backoff caps those at one per
        ``RECONNECT_MAX``)."""
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        lasting = lasting_failure(exc)
        extra = {
            "error": type(exc).__name__,
            "reason": failure_reason(exc),
            "delay": delay,
            "failing_seconds": round(now - self.failing_since),
        }
        due = self.error_logged_at is None or now - self.error_logged_at >= ERROR_EVERY
        if due and (lasting or now - self.failing_since >= ERROR_AFTER):
            self.error_logged_at = now
            log.error(
                "mailbox unreachable; no mail is read until this is fixed"
                if lasting
                else "mailbox unreachable for minutes; still retrying",
                extra=extra,
            )
        else:
            log.warning("mailbox connection failed; reconnecting", extra=extra)

    def _db_failed(self, exc: DBAPIError, delay: float) -> None:
        """Log a database failure of the mail loop: at ERROR at once (mail is not read
        while it lasts), then at most every ``ERROR_EVERY``, WARNING in between.

        Only ``describe_error``: the exception's ``str`` carries the statement and, without
        ``hide_parameters``, a mail's words or a resident's address; PostgreSQL's DETAIL
        quotes the row."""
        now = time.monotonic()
        if self.db_failing_since is None:
            self.db_failing_since = now
        extra = {
            "error": describe_error(exc),
            "delay": delay,
            "failing_seconds": round(now - self.db_failing_since),
        }
        if self.db_error_logged_at is None or now - self.db_error_logged_at >= ERROR_EVERY:
            self.db_error_logged_at = now
            log.error("database failed while reading mail; no mail is read, retrying", extra=extra)
        else:
            log.warning("database failed while reading mail; retrying", extra=extra)

    def _reachable(self) -> None:
        """A poll went through: the outage, if any, is over (the mailbox's and the
        database's)."""
        if self.failing_since is not None:
            log.warning(
                "mailbox reachable again",
                extra={"failed_seconds": round(time.monotonic() - self.failing_since)},
            )
        if self.db_failing_since is not None:
            log.warning(
                "database usable again",
                extra={"failed_seconds": round(time.monotonic() - self.db_failing_since)},
            )
        self.failing_since = self.error_logged_at = None
        self.db_failing_since = self.db_error_logged_at = None
        self.delay = RECONNECT_MIN

    def _serve(self, mailbox: Mailbox) -> None:
        settings = self.svc.settings.mailbox
        while not self.stopping.is_set():
            if mailbox.current_uidvalidity() != (mailbox.state.uidvalidity if mailbox.state else 0):
                return  # reopen: the folder was recreated
            if not self.lock.try_acquire():
                # Another worker polls this mailbox; this one keeps sending (scheduler jobs)
                # and tries again, taking over when the holder dies.
                self._reachable()
                mailbox.forget_news()
                self.stopping.wait(min(5.0, settings.poll_interval))
                continue
            report = process_new_mail(
                self.svc,
                mailbox,
                now_in(self.svc),
                still_mine=self.lock.verify,
                after_batch=alerts_between_batches(self.svc, self.stopping.is_set),
                should_stop=self.stopping.is_set,
            )
            self._reachable()
            if report.fetched or report.quarantined:
                log.info(
                    "processed new mail",
                    extra={
                        "fetched": report.fetched,
                        "cases": report.cases,
                        "alerts": report.alerts,
                    },
                )
                try:
                    deliver(self.svc, now_in(self.svc), self.stopping.is_set)
                except Exception as exc:  # the outbox job retries; the worker must not die
                    log.error("delivery after new mail failed", extra={"error": type(exc).__name__})
                    log.debug("delivery after new mail failed", exc_info=True)
            # Poll again when IDLE reports news, or after idle_seconds in IDLE (a mail
            # that slipped in just before IDLE is caught by that poll), or after
            # poll_interval without IDLE. Either way SIGTERM ends the wait within a second.
            if mailbox.state and mailbox.state.idle:
                mailbox.wait(settings.idle_seconds, self.stopping.is_set)
            else:
                mailbox.forget_news()
                self.stopping.wait(settings.poll_interval)


def run_worker(svc: Service) -> None:
    """Run the worker until SIGTERM, SIGINT or SIGHUP, each a clean stop."""
    worker = Worker(svc)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    if hasattr(signal, "SIGHUP"):  # not on Windows
        signal.signal(signal.SIGHUP, worker.stop)
    worker.run()
