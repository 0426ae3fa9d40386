"""Send: deliver the outbox over SMTP with aiosmtplib, alerts first.

The outbox pattern: mail is written to the database in the same transaction as the
change that caused it, with its Message-ID fixed at creation; this module only delivers.
Each row is marked ``sending`` (committed) just before it is handed to the server and
``sent`` in one short Core transaction right after the server's 250. The remaining window
is "server accepted, commit not yet written": SMTP has no idempotency key, so a crash
there leaves the row ``sending``, and a timeout or dropped connection while the server
holds the message (after DATA) leaves us equally unsure. An alert or escalation is then
sent again, and an ``in-doubt-resend`` event is recorded at the moment it is actually
handed to the server again (when its DATA begins), so every possible duplicate is
accounted for: an on-call person who never hears of a crisis is worse than one repeated
alert, and the fixed Message-ID lets a mail client fold the duplicate. An acknowledgement
is never sent twice (``max_in_doubt_resends``): it most likely arrived, and its case is
marked ``ack_in_doubt`` and listed again in the digests, so a person decides.

Failures, decided per row so that one bad row never holds up the others:

- a 4xx, an unexpected error, or a connection that dies during the row's own
  transaction (a 421 at RCPT, a close after a refusal, a timeout) keeps the row queued
  with a persisted backoff (digests and acknowledgements up to an hour, alerts and
  escalations every 30 s to 2 min), and the run reconnects (a few times at most) to go
  on with the next rows; a row refused like that for too long (acknowledgements and
  digests a day, alerts and escalations 15 minutes, counted from the first such failure
  by a server that answered, so an outage does not use it up) is failed as a 5xx would be;
  a run in which nothing was taken and two or more rows with no recipient in common
  were all answered 4xx is the relay's trouble (its recipient lookup is down), and
  counts for nothing either;
- a 5xx for every recipient, or to the message itself at DATA (a content filter's
  ``554 5.7.x``), marks it failed (an alert or escalation at WARNING here: the one
  ERROR is ``intake.escalate``'s, which fails it over); for an acknowledgement it marks
  the case ``ack_failed`` so staff see it and phone;
- a mail that may have reached the server (timeout or dropped connection after the
  content was sent, or a sender that died after it) is resent after its backoff, at
  most ``MAX_IN_DOUBT_RESENDS`` times (an acknowledgement: never), then failed, also
  when it is taken from a dead sender: an alert is then failed over by
  ``intake.escalate``. A sender that died before the content was sent leaves no doubt
  (``DATA_BEGUN`` is written just before);
- a refusal of the *session* (530/534/535/538 authentication, a 5xx to our MAIL FROM,
  every recipient of a row refused as "relay access denied" while the relay takes
  nothing else in the run; once it takes another row, such a row is failed as its
  address's own refusal) is a configuration
  problem, not the mail's: nothing fails, nothing counts toward giving up, and it is
  logged at ERROR once per run until the relay is fixed;
- a failure that is this process's rather than any row's (no connection to the relay,
  our session refused, every mail deferred at MAIL FROM) backs off only the row the run
  claimed; the rows it never reached stay due in the database, for another worker that
  reaches the relay, and only this process waits their backoff (``_PUT_OFF``);
- recipients refused with a 4xx while others accepted get a follow-up row of their own
  (kind ``<kind>-retry``, key ``retry:<row id>``, written in the same transaction as the
  ``sent`` mark, so it exists once);
- a non-ASCII (RFC 6531) address goes out with SMTPUTF8 when the server offers it, and
  is refused like a 5xx otherwise;
- a digest failed for good (refused, given up, or still in doubt after its resends)
  gives its cases back: its ``DigestEntry`` rows go, so they are listed in the partner's
  next digest (logged once at ERROR, a ``failed:digest`` event per case).

A run asked to stop (``should_stop``: the worker got SIGTERM) ends before it claims
its next row, never inside a mail's transaction; what it did not claim stays queued.

On the wire: 8-bit content goes with ``BODY=8BITMIME`` when the server offers it (RFC
6152), as base64 parts otherwise; a body line over 998 bytes goes as base64 whatever the
server (``wire_content``).

Logs carry row ids, kinds, case ids, SMTP codes and error class names, never addresses,
subjects or text (servers often echo the address in their reply, so replies are only
stored in the row's ``last_error``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import functools
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiosmtplib
from sqlalchemy import delete, func, insert, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from intake.compose import WIRE_POLICY
from intake.config import SmtpSettings
from intake.errors import ConfigError
from intake.fetch import tls_context
from intake.logs import describe_error
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
# 2**7 * 30 s already exceeds MAX_BACKOFF: capping the exponent keeps timedelta from
# overflowing on a row that has been retried for days (it did from attempt 43).
_MAX_EXPONENT = 7

# An urgent mail must not sit in an hour's backoff after a short outage: retry it every
# 30 s, 1 min, then every 2 min, and send it on every working connection even before then.
URGENT_KINDS = frozenset({"alert", "escalation", "alert-retry", "escalation-retry"})
URGENT_FIRST_RETRY = timedelta(seconds=30)
URGENT_MAX_RETRY = timedelta(minutes=2)

# How long a row may be refused by the server (4xx, or an unexpected error) before it is
# failed like a 5xx: an acknowledgement then shows ``ack_failed`` so staff phone the
# resident; a failed alert is logged at ERROR (and escalated by ``intake.escalate``).
GIVE_UP_AFTER = timedelta(hours=24)
URGENT_GIVE_UP_AFTER = timedelta(minutes=15)

# Marks a row whose last attempt died after DATA (server may hold it) until it is resent.
IN_DOUBT = "in doubt: "
# ``last_error`` of a row from the moment its content is handed to the server until the
# server answers: a sender found dead with it may have delivered the mail (in doubt);
# one found dead without it died before DATA, and the mail never reached the server.
DATA_BEGUN = "content handed over, no answer yet"

# Replies that refuse the session, not the mail: authentication required or failed.
# Nothing else is read as a session refusal: a content filter's 554 5.7.0 at DATA, a 503
# or a 5.7.x policy reply to one row refuse that row, and must fail it (see finding 1 of
# review 2: an alert taken for a "session refusal" waited, and blocked all mail, for ever).
_SESSION_CODES = frozenset({530, 534, 535, 538})
# A relay that no longer lets us relay (our IP left mynetworks, SASL broken) refuses every
# recipient like this (Postfix, Sendmail, Exim, Exchange wordings): ours to fix, not the mail's.
_RELAY_DENIED = re.compile(
    r"relay(ing)?\b.{0,40}\b(denied|not permitted|prohibited|not allowed)|unable to relay",
    re.IGNORECASE,
)
# Replies to MAIL FROM that refuse a parameter (syntax, not implemented, RFC 5321's 555):
# after one to BODY=8BITMIME, the mail is offered again in 7 bits before anything counts.
_PARAMETER_REFUSED = frozenset({501, 504, 555})
# A run reopens a connection that one row's failure killed at most this often, so a
# server that drops every connection cannot keep a run going for ever.
MAX_RECONNECTS = 3
# A mail whose delivery stayed in doubt (no answer after its content) is resent at most
# this many times, each after its backoff, then failed: it may be at the server already.
MAX_IN_DOUBT_RESENDS = 2


def max_in_doubt_resends(kind: str) -> int:
    """How often a mail of ``kind`` whose delivery is in doubt is resent.

    An acknowledgement never: the brief promises a resident one acknowledgement, never
    two, and the mail most likely arrived (its content was handed over). It is failed as
    ``ack_in_doubt`` instead, so the case is listed again in the partners' digests with
    a note that the acknowledgement may not have arrived, and a person decides. Alerts
    and escalations are resent (at most ``MAX_IN_DOUBT_RESENDS`` times): a second alert
    costs a minute, a missing one may cost a life.
    """
    return 0 if kind == "ack" else MAX_IN_DOUBT_RESENDS


# ``last_error`` prefix of a row whose own transaction killed the connection: like an
# in-doubt row it waits for its backoff instead of riding early on every connection.
DROPPED = "connection lost: "
# ``last_error`` prefix of rows deferred because the server deferred every mail (a 4xx
# to our MAIL FROM): not their own failure, so urgent ones still ride early.
SERVER_DEFERS = "server defers: "
# Failures that were not the row's own: an urgent row deferred by one of these rides
# the next working connection before its retry is due; any other waits its backoff.
_NOT_ITS_OWN = ("connect: ", "session refused: ", "reconnects exhausted", SERVER_DEFERS)
# Event recording the first time a server that answered refused a row: the give-up
# clock starts there, not at the row's creation (an outage must not use it up).
FIRST_REFUSAL = "refused:"
# Relays (host, port) that last answered 4xx to two or more addresses and took nothing:
# their recipient lookup or DNS is down, so a row's 4xx counts toward giving up only
# once they take a mail again. Per process (a restart forgets it until the next such
# run); guarded by ``_DELIVERY_LOCK`` like the whole run.
_RELAY_DEFERS_ALL: set[tuple[str, int]] = set()
# Event of an urgent mail sent while some of its recipients were refused for good.
REFUSED_FOR_GOOD = "recipients-refused"
# Non-urgent rows a run of this process put off without claiming them: no connection to
# the relay, or the relay refused our session or deferred every mail before their turn.
# Such a failure is this process's (its network, its credentials), not the row's, and
# another worker may reach the relay: writing a backoff into the row made that worker
# find it not due, each such run doubling the delay (review rvt, F5). So the row stays as
# it is, and only this process waits the backoff before trying it again, as it did when
# the backoff was in the row (after an outage, acknowledgements still wait their turn
# behind the alerts). Key: (database, mailbox, relay host, relay port, row id); value:
# (the row's ``attempts`` when put off, times put off since, not before). An entry goes
# once the row is claimed, tried by anyone (its ``attempts`` moved), sent or failed.
# Per process, guarded by ``_DELIVERY_LOCK`` like the whole run. Urgent rows are never
# put off: they ride every run whose connection works, as before.
_PutOffKey = tuple[str, str, str, int, int]
_PUT_OFF: dict[_PutOffKey, tuple[int, int, datetime]] = {}


@dataclass
class SendReport:
    sent: int = 0
    deferred: int = 0
    failed: int = 0


def backoff(attempts: int, kind: str = "") -> timedelta:
    """Delay before the next try after ``attempts`` failed ones.

    Digests and acknowledgements: 30 s, 1 min, 2 min, ... capped at one hour. Alerts and
    escalations: 30 s, 1 min, then every 2 min (someone may be in danger). Never raises,
    however many attempts (the exponent is capped before multiplying).
    """
    exponent = min(max(attempts - 1, 0), _MAX_EXPONENT)
    if kind in URGENT_KINDS:
        return min(URGENT_FIRST_RETRY * (2**exponent), URGENT_MAX_RETRY)
    return min(FIRST_BACKOFF * (2**exponent), MAX_BACKOFF)


def give_up_after(kind: str) -> timedelta:
    """How long a row may keep being refused (4xx) before it is failed for good."""
    return URGENT_GIVE_UP_AFTER if kind in URGENT_KINDS else GIVE_UP_AFTER


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


def _process_started(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), from /proc; None when unknown.

    Field 22 of /proc/PID/stat is the start in clock ticks after boot; /proc/stat's
    ``btime`` is the boot in epoch seconds.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
        with open("/proc/stat", encoding="ascii") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        ticks = int(stat.rpartition(")")[2].split()[19])  # fields after "(comm)" start at 3
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def claim_is_dead(claimed_by: str | None, claimed_at: datetime | None, now: datetime) -> bool:
    """Whether the sender that marked a row ``sending`` can no longer finish it.

    Dead: our own earlier claim, any claim older than a single SMTP transaction could take
    (10 minutes), a claim from before this host's last reboot, from a process on this host
    that no longer exists, or from an earlier process that had the pid now in use (same
    pid as ours, or a process started after the claim's sender did: containers and fast
    restarts reuse pids). Otherwise a live worker is sending it right now.
    """
    if not claimed_by or claimed_by == WORKER_ID:
        return True
    at = from_db(claimed_at)
    if at is None or at < now - STALE_CLAIM:
        return True
    host, pid, start, boot = ([*claimed_by.split(":"), "", "", ""])[:4]
    if host != socket.gethostname():
        return False
    if boot and boot != _boot_id():
        return True
    try:
        number = int(pid)
    except ValueError:
        return True
    if number == os.getpid():
        return True  # not WORKER_ID, so an earlier incarnation with our pid
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    started = _process_started(number)
    try:
        claimed_start = int(start)
    except ValueError:
        return False
    # WORKER_ID's start is taken at import, after its process started (whole seconds).
    return started is not None and started > claimed_start + 1


@dataclass
class _Job:
    """What a run needs of one outbox row, read before connecting."""

    id: int
    kind: str
    case_id: int | None
    recipients: list[str]
    content: bytes
    attempts: int
    previous: str | None  # the dead claim we take over, for a row left ``sending``
    due: bool  # False: an urgent row sent early because a connection works
    in_doubt: bool  # may already be at the server: its resend is recorded as such
    mailbox: str
    priority: int
    partner: str | None
    message_id: str
    dedupe_key: str
    last_error: str = ""


def _select(
    engine: Engine, now: datetime, mailbox: str | None, newer_than: int | None = None
) -> list[_Job]:
    """Due rows, queued urgent rows that may ride early, and rows whose sender died.

    Within a priority, rows that already failed go after fresh ones, so a row that keeps
    failing never stands in front of a new alert. An urgent row rides early (before its
    retry is due) only when its last failure was not its own (no connection, a refused
    session, a server deferring every mail at MAIL FROM, a run out of reconnects): one
    refused by the server (a 4xx), in doubt, or one that killed the connection waits for
    its backoff, as does a follow-up row for recipients just deferred, so it is tried at
    most once per backoff step and cannot open a connection on every run (review 3, 5).

    ``newer_than``: only the urgent rows queued (and due) after the row of that id, the
    ones a running run looks for between its other rows (``_urgent_queued_since``).
    """
    with session_scope(engine) as session:
        urgent = col(Outbox.kind).in_(URGENT_KINDS)
        if newer_than is None:
            query = select(Outbox).where(
                (col(Outbox.status) == "queued") & ((col(Outbox.next_attempt_at) <= now) | urgent)
                | (col(Outbox.status) == "sending")
            )
        else:
            query = select(Outbox).where(
                col(Outbox.id) > newer_than,
                urgent,
                col(Outbox.status) == "queued",
                col(Outbox.next_attempt_at) <= now,
            )
        if mailbox is not None:
            query = query.where(Outbox.mailbox == mailbox)
        order = (Outbox.priority, col(Outbox.attempts) > 0, Outbox.id)
        due = session.exec(query.order_by(*order)).all()  # type: ignore[arg-type]
        jobs = []
        for row in due:
            previous = None
            if row.status == "sending":
                if not claim_is_dead(row.claimed_by, row.claimed_at, now):
                    continue  # another live worker is sending it right now
                previous = row.claimed_by
            assert row.id is not None
            is_due = row.status == "sending" or from_db(row.next_attempt_at) <= now  # type: ignore[operator]
            last_error = row.last_error or ""
            if not is_due and not last_error.startswith(_NOT_ITS_OWN):
                continue
            jobs.append(
                _Job(
                    id=row.id,
                    kind=row.kind,
                    case_id=row.case_id,
                    recipients=json.loads(row.recipients),
                    content=row.content,
                    attempts=row.attempts,
                    previous=previous,
                    due=is_due,
                    # A sender that died after handing the content over may have
                    # delivered it; one that died before (at RCPT) cannot have (review
                    # 5, finding 10). A claim left by a version before DATA_BEGUN
                    # existed lacks the mark: its mail is resent all the same, only
                    # not counted as in doubt (and toward MAX_IN_DOUBT_RESENDS).
                    in_doubt=(previous is not None and last_error.startswith(DATA_BEGUN))
                    or last_error.startswith(IN_DOUBT),
                    mailbox=row.mailbox,
                    priority=row.priority,
                    partner=row.partner,
                    message_id=row.message_id,
                    dedupe_key=row.dedupe_key,
                    last_error=last_error,
                )
            )
    return jobs


def _urgent_queued_since(
    conn: Connection, newer_than: int, now: datetime, mailbox: str | None
) -> bool:
    """Whether an urgent row was queued, and is due, after the row of id ``newer_than``.

    One SELECT on the primary key (ids grow), LIMIT 1, on the run's open connection:
    cheap enough to ask after every non-urgent row of a run.
    """
    query = select(Outbox.id).where(
        col(Outbox.id) > newer_than,
        col(Outbox.kind).in_(URGENT_KINDS),
        col(Outbox.status) == "queued",
        col(Outbox.next_attempt_at) <= now,
    )
    if mailbox is not None:
        query = query.where(Outbox.mailbox == mailbox)
    with conn.begin():
        return conn.execute(query.limit(1)).first() is not None


def _claim(conn: Connection, job: _Job, at: datetime) -> bool:
    """Take a row for sending; False when another worker took it first (portable CAS).

    A queued row is taken only if nobody touched it since we read it (same ``attempts``);
    a ``sending`` row only from the dead claim we saw. A row that may already be at
    the server keeps (or, taken from a dead sender, gets) its in-doubt mark: its
    ``in-doubt-resend`` event is written by ``_handing_over`` once its content is really
    handed over, so a refusal before that (a 451 to MAIL FROM) records no resend and
    loses no mark (review 3, finding 7).
    """
    if job.previous:
        mine = (col(Outbox.status) == "sending") & (Outbox.claimed_by == job.previous)
    else:
        mine = (col(Outbox.status) == "queued") & (Outbox.attempts == job.attempts)
    values: dict[str, object] = {"status": "sending", "claimed_by": WORKER_ID, "claimed_at": at}
    if job.in_doubt and not job.last_error.startswith(IN_DOUBT):
        values["last_error"] = f"{IN_DOUBT}its sender died while sending it"
    with conn.begin():
        result = conn.execute(update(Outbox).where(Outbox.id == job.id, mine).values(**values))  # type: ignore[arg-type]
        return result.rowcount == 1


def _handing_over(conn: Connection, job: _Job, clock: Callable[[], datetime]) -> None:
    """Mark the row as handed to the server (its DATA begins); for an in-doubt row,
    record that it is resent.

    The mark (``DATA_BEGUN``) tells the next worker, should this one die before the
    server's answer is recorded, that the mail may be at the server. Sending an in-doubt
    row again risks one duplicate; not sending risks a resident or the on-call person
    never hearing from us. Resend, and say so: the event and the end of the in-doubt
    mark in one transaction, exactly when the resend really happens.
    """
    at = clock()
    with conn.begin():
        conn.execute(
            update(Outbox)
            .where(Outbox.id == job.id, Outbox.claimed_by == WORKER_ID)  # type: ignore[arg-type]
            # An in-doubt mark is accounted for by the event from here on.
            .values(last_error=DATA_BEGUN + ("; in-doubt resend" if job.in_doubt else ""))
        )
        if job.in_doubt:
            _insert_event(conn, at, job.case_id, f"in-doubt-resend:{job.kind}", f"outbox {job.id}")
    if not job.in_doubt:
        return
    log.warning(
        "resending a mail whose delivery is in doubt",
        extra={"outbox": job.id, "kind": job.kind},
    )


def _resends(conn: Connection, job: _Job) -> int:
    """How many times this row was resent while its delivery was in doubt (its events)."""
    query = select(func.count()).where(_refusal_events(job, "in-doubt-resend:"))
    with conn.begin():
        return int(conn.execute(query).scalar_one())


def _fail_in_doubt(engine: Engine, row_id: int, resends: int, why: str, now: datetime) -> bool:
    """Fail a row whose delivery stayed in doubt once it may be resent no more.

    One wording for both places that decide it: the claim of a dead sender's row and the
    deferral after a timeout (``max_in_doubt_resends``: an acknowledgement never).
    """
    why = f"delivery in doubt after {resends} resends; may have arrived: {why}"
    return _fail(engine, row_id, why, now, codes="in-doubt")


class _Refused(Exception):
    """Every recipient was refused (or could not be addressed at all)."""

    def __init__(self, errors: dict[str, tuple[int, str]]) -> None:
        super().__init__(sorted({code for code, _ in errors.values()}))
        self.errors = errors


class _InDoubt(Exception):
    """The connection failed after DATA began: the server may have accepted the mail."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


class _Dropped(Exception):
    """The connection died during this row's transaction, before its content was sent.

    Not in doubt (the server cannot hold a mail it never got), but this row's failure:
    a 421 to one of its recipients, a server that closes after refusing it, a timeout
    while it verifies them. The row waits its backoff and counts toward giving up; the
    run reconnects for the next rows.
    """

    def __init__(self, cause: BaseException | str, code: int | None = None) -> None:
        super().__init__(cause if isinstance(cause, str) else type(cause).__name__)
        # For the log: an SMTP code or an error class name, never the reply's text.
        self.short = str(code) if code else ("reply" if isinstance(cause, str) else str(self))


def _insert_event(
    conn: Connection, at: datetime, case_id: int | None, kind: str, detail: str
) -> None:
    """``store.record_event`` for a Core connection: the outbox writes its events in the
    same short transaction as the row change they explain."""
    conn.execute(
        insert(Event).values(at=at, case_id=case_id, kind=kind, detail=detail, actor="service")
    )


def _ascii(address: str) -> bool:
    return address.isascii()


# RFC 5321 4.5.3.1.6 / RFC 5322 2.1.1: at most 998 bytes on a line, CRLF not counted.
MAX_LINE_BYTES = 998


def _too_long(data: bytes) -> bool:
    """Whether a line of ``data`` exceeds ``MAX_LINE_BYTES``; a line ends at CR, LF or
    CRLF, as aiosmtplib ends lines on the wire. (``bytes.splitlines``: ~0.1 s for a
    25 MB mail; a regex for 999 non-newline bytes rescanned each line from every
    position, over two minutes.)"""
    return max(map(len, data.splitlines()), default=0) > MAX_LINE_BYTES


def wire_content(content: bytes, eight_bit: bool) -> bytes:
    """``content`` as it may go to a server: no line over 998 bytes, and no 8-bit byte
    unless the server offers 8BITMIME (``eight_bit``).

    Why here and not only where mail is composed: a row was composed once, maybe before a
    relay change, by code (acknowledgements, alerts, escalations) that writes 8bit parts
    with whatever the resident or a staff member wrote (a sender address, phone numbers,
    reasons). A line over 998 bytes makes aiosmtpd and strict relays answer 500 (the mail
    fails for good; for an alert, the one mail that must arrive), and a server without
    8BITMIME may reject or strip 8-bit bytes (RFC 6152). Each body part that would break
    either is re-encoded as base64 (76-byte lines, the same bytes once decoded); the
    headers and every other part stay byte for byte. Mail that needs nothing (nearly
    all) is returned as it is, without parsing.
    """
    if not _too_long(content) and (eight_bit or content.isascii()):
        return content
    # refold_source="none": headers as composed (In-Reply-To with a long Message-ID is
    # set raw, see compose.set_thread_headers) go out byte for byte, not re-encoded.
    message = email.message_from_bytes(content, policy=WIRE_POLICY)
    changed = False
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload()
        data = part.get_payload(decode=True)
        if not isinstance(payload, str) or not isinstance(data, bytes):
            continue  # an attached message/rfc822: walked into already
        cte = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
        if cte in ("7bit", "8bit", "binary"):
            wire = data  # as it is on the wire (``get_payload()`` decodes the charset)
        else:
            wire = payload.encode("utf-8", "surrogateescape")
        if not _too_long(wire) and (eight_bit or wire.isascii()):
            continue
        part.set_payload(base64.encodebytes(data).decode("ascii"))
        if "Content-Transfer-Encoding" in part:
            part.replace_header("Content-Transfer-Encoding", "base64")
        else:
            part["Content-Transfer-Encoding"] = "base64"
        changed = True
    return message.as_bytes() if changed else content


async def _transaction(
    smtp: aiosmtplib.SMTP,
    sender: str,
    recipients: list[str],
    content: bytes,
    utf8: bool,
    before_data: Callable[[], None] | None = None,
    *,
    eight_bit: bool = False,
) -> tuple[dict[str, tuple[int, str]], str]:
    """One SMTP mail transaction, step by step, so that we know where it failed.

    Returns (refused recipients -> (code, reply), the server's reply to the data). A
    non-ASCII address is sent with SMTPUTF8 when the server offers it; otherwise it is
    refused here (553) without being sent. Raises ``_Refused`` when nobody is left,
    ``_Dropped`` when the connection dies before the content was sent, ``_InDoubt`` when
    it fails after, and aiosmtplib's reply errors otherwise (a reply to MAIL FROM is
    ``SMTPSenderRefused``, a refusal at DATA ``SMTPDataError``). After any refusal the
    transaction is reset, so the next row does not find our envelope still open (a
    server may keep it after refusing DATA, and answer the next MAIL with 503).
    ``before_data`` runs once the envelope is accepted, just before the content is
    handed over (an in-doubt resend is recorded there).

    8-bit content (RFC 6152): with ``eight_bit`` (the server offers 8BITMIME) MAIL FROM
    says ``BODY=8BITMIME``; without it, or when the server refuses that parameter after
    all, the 8-bit body parts go as base64 (``wire_content``), so no 8-bit byte reaches
    a server that did not accept it. Lines over 998 bytes are re-encoded either way.
    """
    errors: dict[str, tuple[int, str]] = {}
    content = wire_content(content, eight_bit)
    body = ["BODY=8BITMIME"] if eight_bit and not content.isascii() else []
    wide = [r for r in recipients if not _ascii(r)] + ([sender] if not _ascii(sender) else [])
    encoding = "ascii"
    options: list[str] = []
    if wide and utf8:
        encoding, options = "utf-8", ["SMTPUTF8"]
    elif wide:
        for address in wide:
            errors[address] = (553, "non-ASCII address and the server offers no SMTPUTF8")
        recipients = [r for r in recipients if _ascii(r)]
        if not _ascii(sender) or not recipients:
            raise _Refused(errors)
    try:
        try:
            try:
                await smtp.mail(sender, options=[*options, *body], encoding=encoding)
            except aiosmtplib.SMTPSenderRefused as exc:
                if not body or exc.code not in _PARAMETER_REFUSED or not smtp.is_connected:
                    raise
                # It offers 8BITMIME but refuses the parameter: the same mail in 7 bits.
                content, body = wire_content(content, False), []
                await smtp.mail(sender, options=options, encoding=encoding)
        except aiosmtplib.SMTPSenderRefused as exc:
            if options and exc.code >= 500 and exc.code not in _SESSION_CODES:
                # Our SMTPUTF8 parameter, which only this row's address needs.
                raise _Refused({sender: (exc.code, exc.message)}) from exc
            if exc.code == 503:
                # "Nested MAIL" / bad sequence: the session's state, not our sender.
                smtp.close()
                raise _Dropped(f"{exc.code} {exc.message}", exc.code) from exc
            raise
        accepted = 0
        for address in recipients:
            try:
                await smtp.rcpt(address, encoding=encoding)
                accepted += 1
            except aiosmtplib.SMTPRecipientRefused as exc:
                errors[address] = (exc.code, exc.message)
        if not accepted:
            raise _Refused(errors)
    except (aiosmtplib.SMTPResponseException, _Refused):
        # The next row finds out whether the connection still works.
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await smtp.rset()
        raise
    except (aiosmtplib.SMTPException, OSError) as exc:
        smtp.close()
        raise _Dropped(exc) from exc
    if not smtp.is_connected:  # a 421 to a recipient closed it: DATA was never sent
        closing = next((f"{c} {m}" for c, m in errors.values() if c == 421), None)
        raise _Dropped(closing or "SMTPServerDisconnected", 421 if closing else None)
    if before_data is not None:
        before_data()
    try:
        response = await smtp.data(content)
    except aiosmtplib.SMTPResponseException:
        # The server answered: it did not take the mail. Reset, or reconnect if it left.
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await smtp.rset()
        raise
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise _InDoubt(exc) from exc
    return errors, response.message


def _session_refused(exc: BaseException) -> str | None:
    """Why ``exc`` refuses our session or configuration rather than this mail, or None.

    Narrow on purpose: a refusal read as the session's fails nothing and counts toward
    nothing, so a mail's own refusal taken for one would wait (and hold up the run) for
    ever. Authentication codes anywhere; a 5xx to our MAIL FROM (the same sender for
    every row; ``_transaction`` already turned 503 and SMTPUTF8 refusals into the row's);
    every recipient of the row refused as "relay access denied".
    """
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code in _SESSION_CODES:
        return "authentication"
    if isinstance(exc, aiosmtplib.SMTPSenderRefused) and exc.code >= 500:
        return "sender"
    if isinstance(exc, _Refused) and exc.errors:
        codes = {code for code, _ in exc.errors.values()}
        if codes <= _SESSION_CODES:
            return "authentication"
        if all(
            500 <= code < 600 and _RELAY_DENIED.search(message)
            for code, message in exc.errors.values()
        ):
            return "relay"
    return None


async def _connect(settings: SmtpSettings) -> aiosmtplib.SMTP:
    """A connected, authenticated client whose extensions (SMTPUTF8) are known."""
    # Read first: a password that cannot be read (ConfigError) is the operator's to fix,
    # and the run defers its mail instead of dying with it (review rv9b F1).
    password = (settings.password.get() or "") if settings.username else ""
    smtp = _client(settings)
    await smtp.connect()
    if settings.username:
        await smtp.login(settings.username, password)
    if smtp.is_ehlo_or_helo_needed:  # the extensions (SMTPUTF8) are known after EHLO
        try:
            await smtp.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not smtp.is_connected:
                raise
            await smtp.helo()
    return smtp


def _scope(
    settings: SmtpSettings, engine: Engine, mailbox: str | None
) -> tuple[str, str, str, int]:
    """The part of a ``_PUT_OFF`` key that names this run's database, mailbox and relay."""
    return (str(engine.url), mailbox or "", settings.host, settings.port)


def _not_put_off(scope: tuple[str, str, str, int], jobs: list[_Job], now: datetime) -> list[_Job]:
    """``jobs`` less the rows this process put off until after ``now``; forgets entries
    whose row was sent, failed or tried since (it is on its own schedule again)."""
    listed = {job.id: job for job in jobs}
    for key in [k for k in _PUT_OFF if k[:4] == scope]:
        job = listed.get(key[4])
        if job is None or job.previous is not None or job.attempts != _PUT_OFF[key][0]:
            del _PUT_OFF[key]
    return [
        job for job in jobs if (entry := _PUT_OFF.get((*scope, job.id))) is None or entry[2] <= now
    ]


def _still_queued(engine: Engine, jobs: list[_Job]) -> list[_Job]:
    """Those of ``jobs`` still queued: the rows another worker sent (or is sending) since
    they were listed are neither put off nor reported as deferred."""
    if not jobs:
        return []
    with engine.connect() as conn:
        queued = set(
            conn.execute(
                select(Outbox.id).where(
                    col(Outbox.id).in_([j.id for j in jobs]), col(Outbox.status) == "queued"
                )
            ).scalars()
        )
    return [j for j in jobs if j.id in queued]


def _put_off(scope: tuple[str, str, str, int], jobs: list[_Job], now: datetime) -> None:
    """Keep these unclaimed rows out of this process's runs for their backoff; the rows
    themselves are left untouched for other workers (see ``_PUT_OFF``)."""
    for job in jobs:
        if job.kind in URGENT_KINDS:
            continue  # tried on every run, as a row deferred by "connect:" rode early
        key = (*scope, job.id)
        attempts, times, _ = _PUT_OFF.get(key, (job.attempts, 0, now))
        times = times + 1 if attempts == job.attempts else 1
        _PUT_OFF[key] = (job.attempts, times, now + backoff(job.attempts + times, job.kind))


def _log_unavailable(
    exc: BaseException, settings: SmtpSettings | None = None, urgent: bool = False
) -> None:
    """Log why the mail server could not be used, naming where and what to check.

    Why: "smtp unavailable: SMTPConnectError" alone left the contractor guessing while
    an urgent alert sat in the outbox (review rv10a F7). The server, port and security
    are named (no secret), and the error's class and message (the OS's reason; no mail
    text reaches a connection error). With an alert or escalation waiting it is an ERROR:
    nobody is being alerted until the server is reached."""
    if isinstance(exc, ConfigError):
        log.error("smtp password unavailable: %s", exc)  # names the variable or file only
        return
    code = getattr(exc, "code", None)
    where = f"{settings.host}:{settings.port} ({settings.security})" if settings else "?"
    if isinstance(code, int) and 500 <= code < 600:
        log.error(
            "smtp %s refused our session; check [smtp] username, password and from_address",
            where,
            extra={"error": type(exc).__name__, "code": code},
        )
        return
    level = logging.ERROR if urgent else logging.WARNING
    log.log(
        level,
        "smtp unavailable at %s: %s; check [smtp] host, port and security, and that the "
        "mail server is running%s",
        where,
        describe_error(exc),
        ": urgent alerts are waiting and reach nobody until it is" if urgent else "",
        extra={"code": code},
    )


async def _deliver(
    settings: SmtpSettings,
    engine: Engine,
    now: datetime,
    mailbox: str | None,
    clock: Callable[[], datetime],
    should_stop: Callable[[], bool],
) -> SendReport:
    report = SendReport()
    scope = _scope(settings, engine, mailbox)
    jobs = _not_put_off(scope, _select(engine, now, mailbox), now)
    if not jobs:
        return report

    claimed: set[int] = set()

    def defer(rest: list[_Job], why: str, **kw: bool) -> None:
        # Only rows this run claimed go back with a backoff in the row (an urgent row
        # it took early included). The others it never tried: the failure (no
        # connection, our session refused, every mail deferred) is this process's, so
        # they stay due for a worker that reaches the relay, and this process leaves its
        # non-urgent ones alone for their backoff (``_put_off``; review rvt, F5). An
        # urgent row sent early that was not claimed keeps its schedule.
        deferred, failed = _defer(engine, [j.id for j in rest if j.id in claimed], why, now, **kw)
        others = _still_queued(engine, [j for j in rest if j.id not in claimed and j.due])
        _put_off(scope, others, now)
        report.deferred += deferred + len(others)
        report.failed += failed

    try:
        smtp = await _connect(settings)
    except (aiosmtplib.SMTPException, OSError, ConfigError) as exc:
        _log_unavailable(exc, settings, any(j.kind in URGENT_KINDS for j in jobs))
        # Rows taken over from a dead sender stay as they are: nothing was sent this run.
        defer([j for j in jobs if j.previous is None], f"connect: {type(exc).__name__}")
        return report
    utf8 = smtp.supports_extension("smtputf8")
    eight_bit = smtp.supports_extension("8bitmime")
    reconnects = 0
    # Decided at the end of the run, once we know whether the relay took anything:
    # rows whose every recipient was "relay access denied", and rows whose every
    # recipient got a 4xx (with the reply for the give-up).
    relay_denied: list[tuple[_Job, str]] = []
    all_temporary: list[tuple[_Job, str]] = []
    accepted = False  # the relay took at least one row in this run
    tried = 0  # rows handed to the server in this run (claimed)
    conn = engine.connect()
    try:
        # Rows are known by id; any row queued after the list was read has a larger one.
        newest = max(j.id for j in jobs)
        index = 0
        while True:
            if should_stop():
                # The worker is stopping (SIGTERM): end here, between two mails, never
                # inside one's transaction, so that systemd's SIGKILL after
                # TimeoutStopSec cannot catch a mail after DATA (in doubt; an
                # acknowledgement then never resent). Rows not claimed stay queued,
                # untouched, for the next start (review rvr, 2).
                log.info(
                    "stopping: the remaining mail stays queued for the next start",
                    extra={"remaining": len(jobs) - index},
                )
                break
            # An alert queued while this run sends acknowledgements or digests (a slow
            # content scanner can take most of the timeout per mail) must not wait for
            # the whole run, which holds the process lock (review 5, finding 7): after
            # each non-urgent row, look for urgent rows queued since, and send them
            # next, on this connection. They are claimed like any other row, so a row
            # another worker took is not sent twice.
            if (
                index
                and jobs[index - 1].kind not in URGENT_KINDS
                and _urgent_queued_since(conn, newest, clock(), mailbox)
            ):
                newer = _select(engine, clock(), mailbox, newer_than=newest)
                jobs[index:index] = newer
                newest = max([newest, *(j.id for j in newer)])
            if index >= len(jobs):
                break
            job = jobs[index]
            index += 1
            rest = [j for j in jobs[index:] if j.previous is None]
            if not smtp.is_connected:
                # The previous row's failure killed the connection: that row has been
                # counted; the rows after it go on over a new one (a few times a run).
                if reconnects >= MAX_RECONNECTS:
                    log.warning(
                        "smtp connection lost again; the remaining mail waits for the next run",
                        extra={"reconnects": reconnects},
                    )
                    defer([job, *rest] if job.previous is None else rest, "reconnects exhausted")
                    break
                reconnects += 1
                try:
                    smtp = await _connect(settings)
                except (aiosmtplib.SMTPException, OSError, ConfigError) as exc:
                    _log_unavailable(
                        exc, settings, any(j.kind in URGENT_KINDS for j in [job, *rest])
                    )
                    defer(
                        [job, *rest] if job.previous is None else rest,
                        f"connect: {type(exc).__name__}",
                    )
                    break
                utf8 = smtp.supports_extension("smtputf8")
                eight_bit = smtp.supports_extension("8bitmime")
            if not _claim(conn, job, clock()):
                continue
            _PUT_OFF.pop((*scope, job.id), None)
            resends = _resends(conn, job) if job.in_doubt else 0
            if job.in_doubt and resends >= max_in_doubt_resends(job.kind):
                # Bounded here too, not only when a resend times out: a process killed
                # after every DATA (an OOM right after sending) would otherwise resend
                # it on every restart without limit (review 5, finding 10); an
                # acknowledgement is never resent (``max_in_doubt_resends``).
                if _fail_in_doubt(engine, job.id, resends, job.last_error, now):
                    report.failed += 1
                continue
            claimed.add(job.id)
            tried += 1
            try:
                errors, response = await _transaction(
                    smtp,
                    settings.from_address,
                    job.recipients,
                    job.content,
                    utf8,
                    functools.partial(_handing_over, conn, job, clock),
                    eight_bit=eight_bit,
                )
            except _InDoubt as exc:
                # The server may hold it: resent (and recorded as such) after its backoff,
                # a bounded number of times; the next rows go on over a new connection.
                log.warning(
                    "connection lost after DATA; delivery in doubt (an ack is never resent)",
                    extra={"outbox": job.id, "kind": job.kind, "error": str(exc)},
                )
                defer([job], f"{IN_DOUBT}{exc}", in_doubt=True, give_up=True)
                continue
            except _Dropped as exc:
                log.warning(
                    "smtp connection lost during one mail; it waits, the others go on",
                    extra={"outbox": job.id, "kind": job.kind, "error": exc.short},
                )
                defer([job], f"{DROPPED}{exc}", give_up=True)
                continue
            except (_Refused, aiosmtplib.SMTPResponseException) as exc:
                if isinstance(exc, aiosmtplib.SMTPSenderRefused) and exc.code < 500:
                    # "Try later" to MAIL FROM: the server's state, not this mail's.
                    log.warning("smtp server defers every mail", extra={"code": exc.code})
                    defer([job, *rest], f"{SERVER_DEFERS}{_reply(exc)}")
                    break
                reason = _session_refused(exc)
                if reason == "relay":
                    # Waits for now, counting for nothing; whether it is the relay's or
                    # this address's is decided at the end of the run (see below).
                    relay_denied.append((job, _reply(exc)))
                    defer([job], f"session refused: {_reply(exc)}")
                    continue
                if reason:
                    log.error(
                        "smtp server refuses our session (authentication or sender "
                        "address?); everything waits until it is fixed",
                        extra={"outbox": job.id, "kind": job.kind, "codes": _codes(exc)},
                    )
                    defer([job, *rest], f"session refused: {_reply(exc)}")
                    break
                codes = _codes(exc)
                if all(500 <= c < 600 for c in codes):
                    # Refused at RCPT (not at DATA): the addresses themselves.
                    at_rcpt = len(exc.errors) if isinstance(exc, _Refused) else 0
                    if _fail(engine, job.id, _reply(exc), now, codes=str(codes), refused=at_rcpt):
                        report.failed += 1
                elif all(400 <= c < 500 for c in codes):
                    # Whether this counts toward giving up is decided at the end of the
                    # run: a relay that answers 4xx to everybody is not this mail's fault.
                    all_temporary.append((job, _reply(exc)))
                    defer([job], _reply(exc))
                else:
                    defer([job], _reply(exc), give_up=True)
                continue
            except (aiosmtplib.SMTPException, OSError) as exc:
                # Not expected from _transaction (it maps these); still this row's.
                smtp.close()
                defer([job], f"{DROPPED}{type(exc).__name__}", give_up=True)
                continue
            except Exception as exc:  # one poison row must not block the rest
                # ERROR the first time; a row failing the same way on every run says so
                # at WARNING until it is given up (and failed, which logs again).
                again = job.last_error.startswith("error: ")
                log.log(
                    logging.WARNING if again else logging.ERROR,
                    "unexpected error sending one outbox row; it waits, the others go on",
                    extra={"outbox": job.id, "kind": job.kind, "error": type(exc).__name__},
                )
                log.debug("unexpected error sending outbox %s", job.id, exc_info=True)
                defer([job], f"error: {type(exc).__name__}", give_up=True)
                try:
                    await smtp.rset()
                except (aiosmtplib.SMTPException, OSError):
                    smtp.close()  # the next row reconnects
                continue
            _mark_sent(conn, job, response, errors, clock())
            report.sent += 1
            accepted = True
        # Relay access denied: a relay that no longer relays for us (our address left
        # its networks, SASL broken) denies every recipient of every row, and failing
        # them would fail all mail for good over a configuration problem (review 2,
        # finding 8). But once it took another row in this run it does relay for us,
        # so a denial is about that row's address (a mistyped on-call domain): the
        # row's own 5xx, failed so that an alert fails over at once (review 3, 2).
        for job, why in relay_denied:
            if accepted:
                if _fail(engine, job.id, why, now, codes="5xx", refused=len(job.recipients)):
                    report.failed += 1
                    report.deferred -= 1
            else:
                log.error(
                    "smtp server refuses to relay our mail (relay access denied); "
                    "it waits until the relay is fixed",
                    extra={"outbox": job.id, "kind": job.kind},
                )
                break  # once per run
        # A 4xx to every recipient of every row, nothing taken: the relay's own trouble
        # (its recipient lookup or DNS is down), like a connection that fails; it must
        # not spend the alert and its escalations (review 3, finding 1). One row alone
        # cannot tell that from its own recipients' trouble, however many they are: the
        # recipients of one row (on-call and night duty, an escalation's on-call and
        # backup) often share a provider whose MX is down, or are all full; read as the
        # relay's, that alert never counted toward its give-up and was never failed over
        # (review 5, finding 2). So it takes two different rows with no recipient in
        # common (an alert and an acknowledgement), every one deferred alike; an alert
        # and its escalation to the same on-call address are the same mailbox's trouble.
        # Otherwise each such row's own 4xx counts toward its give-up as before. The
        # relay's state is kept until it takes a mail again, so the runs in which the
        # alert is alone (the acknowledgement waiting its hourly backoff) do not count.
        relay = (settings.host, settings.port)
        if accepted:
            _RELAY_DEFERS_ALL.discard(relay)
        elif all_temporary and len(all_temporary) == tried and _unrelated_rows(all_temporary):
            _RELAY_DEFERS_ALL.add(relay)
        relay_wide = not accepted and len(all_temporary) == tried and relay in _RELAY_DEFERS_ALL
        if all_temporary and relay_wide:
            log.warning(
                "smtp server defers every recipient; nothing counts toward giving up",
                extra={"rows": len(all_temporary)},
            )
        else:
            for job, why in all_temporary:
                if _give_up_if_due(engine, job.id, why, now):
                    report.failed += 1
                    report.deferred -= 1
    finally:
        conn.close()
        try:
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()
    return report


def _unrelated_rows(deferred: list[tuple[_Job, str]]) -> bool:
    """Whether two of these rows share no recipient and no case: evidence about the relay.

    Never one row's own recipients (they often share a provider or a mailbox problem),
    nor two rows to the same address (an alert and its escalation to on-call), nor two
    rows of one case: an alert to on-call and its late notice to the backup, both at one
    provider that defers them, are that provider's trouble, and reading them as the
    relay's kept the alert from ever failing (review 6a, finding 1).
    """
    rows = [(set(job.recipients), job.case_id) for job, _ in deferred]
    return any(
        a.isdisjoint(b) and (case_a is None or case_a != case_b)
        for i, (a, case_a) in enumerate(rows)
        for b, case_b in rows[i + 1 :]
    )


def _codes(exc: BaseException) -> list[int]:
    if isinstance(exc, _Refused):
        return sorted({code for code, _ in exc.errors.values()})
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return [exc.code]
    return []


def _reply(exc: BaseException) -> str:
    """What the server said, for ``last_error`` only (it may name the address)."""
    if isinstance(exc, _Refused):
        return f"refused: {[code for code, _ in exc.errors.values()]} " + "; ".join(
            f"{code} {message}" for code, message in exc.errors.values()
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}"
    return type(exc).__name__


def _mark_sent(
    conn: Connection,
    job: _Job,
    response: str,
    errors: Mapping[str, tuple[int, str]],
    now: datetime,
) -> None:
    """Record the server's 250 as fast as possible: the crash window is exactly this call.

    Core statements on a connection held open for the whole run (no ORM load, no new
    connection), so the time between "server accepted" and "commit written" is a single
    short local transaction. Recipients refused with a 4xx get their follow-up row in
    the same transaction (key ``retry:<row id>``: it is written once or not at all).
    """
    values: dict[str, object] = {
        "status": "sent",
        "sent_at": now,
        "attempts": Outbox.attempts + 1,
        "smtp_response": response[:500],
    }
    temporary = [a for a, (code, _) in errors.items() if 400 <= code < 500]
    permanent = [a for a, (code, _) in errors.items() if not 400 <= code < 500]
    if errors:
        values["last_error"] = (
            "some recipients refused: "
            + "; ".join(f"{a} {code} {message}" for a, (code, message) in errors.items())
        )[:500]
    else:
        # The server answered: ``DATA_BEGUN`` goes; what the row said before stays.
        values["last_error"] = "in-doubt resend" if job.in_doubt else (job.last_error or None)
    with conn.begin():
        conn.execute(update(Outbox).where(Outbox.id == job.id).values(**values))  # type: ignore[arg-type]
        if job.kind == "ack" and job.case_id is not None:
            conn.execute(
                update(Case)
                .where(Case.id == job.case_id, col(Case.ack_state).in_(["pending", "queued"]))  # type: ignore[arg-type]
                .values(ack_state="sent")
            )
        _insert_event(conn, now, job.case_id, f"sent:{job.kind}", f"outbox {job.id}")
        if job.kind == "digest":
            # Per case, so ``show`` says the partner has it (one SELECT, one INSERT).
            cases = conn.execute(
                select(DigestEntry.case_id).where(DigestEntry.outbox_id == job.id).distinct()
            ).scalars()
            detail = f"partner {job.partner} (outbox {job.id})"
            rows = [
                {
                    "at": now,
                    "case_id": c,
                    "kind": "sent:digest",
                    "detail": detail,
                    "actor": "service",
                }
                for c in sorted(cases)
            ]
            if rows:
                conn.execute(insert(Event), rows)
        first_for_case = False
        if permanent and job.kind in URGENT_KINDS:
            # One ERROR per case for on-call addresses refused for good: every later
            # escalation reaches the same address and is refused again (review 2, 11).
            seen = conn.execute(
                select(Event.id).where(
                    Event.case_id == job.case_id, col(Event.kind) == REFUSED_FOR_GOOD
                )
            ).first()
            first_for_case = seen is None
            _insert_event(
                conn,
                now,
                job.case_id,
                REFUSED_FOR_GOOD,
                f"outbox {job.id}: {len(permanent)} recipient(s)",
            )
        if temporary:
            # Its own kind and Message-ID column (the content is the same mail): a reply
            # to it still finds the original alert, and escalation and the monthly report
            # count alerts as before.
            kind = job.kind if job.kind.endswith("-retry") else f"{job.kind}-retry"
            # A retry of a retry keeps the original's Message-ID base (the column does
            # not grow a " retry:<id>" per level) and, below, its first refusal: these
            # recipients have been refused since then (review 3, finding 6).
            base = job.message_id.split(" retry:", 1)[0]
            first = _chain_first_refusal(conn, job) if job.kind.endswith("-retry") else None
            created = conn.execute(
                insert(Outbox).values(
                    mailbox=job.mailbox,
                    kind=kind,
                    priority=job.priority,
                    dedupe_key=f"retry:{job.id}",
                    case_id=job.case_id,
                    partner=job.partner,
                    recipients=json.dumps(temporary),
                    message_id=f"{base} retry:{job.id}",
                    content=job.content,
                    created_at=now,
                    status="queued",
                    attempts=0,
                    next_attempt_at=now + backoff(1, kind),
                )
            )
            if first is not None:
                assert created.inserted_primary_key is not None
                _insert_event(
                    conn,
                    first,
                    job.case_id,
                    f"{FIRST_REFUSAL}{kind}",
                    f"outbox {created.inserted_primary_key[0]}",
                )
    if temporary or permanent:
        level = logging.ERROR if first_for_case else logging.WARNING
        if temporary and permanent:
            what = "some refused for good, others for now (those are retried); the rest got it"
        elif permanent:
            what = "some refused for good (not retried); the others got it"
        else:
            what = "some refused for now (they are retried); the others got it"
        log.log(
            level,
            "some recipients refused: %s",
            what,
            extra={
                "outbox": job.id,
                "kind": job.kind,
                "retried": len(temporary),
                "refused_for_good": len(permanent),
                "codes": sorted({code for code, _ in errors.values()}),
            },
        )


def _chain_first_refusal(conn: Connection, job: _Job) -> datetime:
    """When the recipients left over by the follow-up row ``job`` were first refused.

    Its own first refusal when it has one (copied from its parent in turn), else its
    creation: it was created for recipients that had just been refused for now.
    """
    seen = conn.execute(
        select(Event.at)
        .where(
            col(Event.kind) == f"{FIRST_REFUSAL}{job.kind}",
            col(Event.detail) == f"outbox {job.id}",
        )
        .order_by(col(Event.at))
    ).first()
    if seen is not None:
        return seen[0]  # as stored: it is stored again as is
    created: datetime = conn.execute(
        select(Outbox.created_at).where(Outbox.id == job.id)
    ).scalar_one()
    return created


def _open() -> ColumnElement[bool]:
    """Rows this worker may still change: queued, or ``sending`` under our own claim.

    Never a row another worker sent, failed or is sending right now.
    """
    return (col(Outbox.status) == "queued") | (
        (col(Outbox.status) == "sending") & (Outbox.claimed_by == WORKER_ID)
    )


def _defer(
    engine: Engine,
    row_ids: list[int],
    why: str,
    now: datetime,
    *,
    give_up: bool = False,
    in_doubt: bool = False,
) -> tuple[int, int]:
    """Put rows back in the queue with their backoff; returns (deferred, failed).

    Conditional: a row is touched only while still queued or ``sending`` under our own
    claim and unchanged since we read it, so a stale list (a failed connect after another
    worker sent the rows) never re-queues mail that went out. ``give_up``: the server
    refused this mail itself (or its transaction failed), so a row failing for longer
    than ``give_up_after`` since its first such failure fails; without it (no
    connection, a session refused) nothing counts. ``in_doubt``: the row may be at the
    server; after ``MAX_IN_DOUBT_RESENDS`` resends that stayed in doubt it fails rather
    than reach someone again and again. An in-doubt mark stays until the row is resent.
    """
    deferred = failed = 0
    for row_id in row_ids:
        with session_scope(engine) as session:
            row = session.get(Outbox, row_id)
        if row is None:
            continue
        mine = row.status == "sending" and row.claimed_by == WORKER_ID
        if not (row.status == "queued" or mine):
            continue  # sent, failed, or held by another live worker: not ours to change
        if give_up:
            first = _first_refusal(engine, row, now)
            if now - first >= give_up_after(row.kind):
                if _fail(engine, row_id, f"gave up after {now - first}: {why}", now, codes="4xx"):
                    failed += 1
                continue
        resends = _in_doubt_resends(engine, row) if in_doubt else 0
        if in_doubt and resends >= max_in_doubt_resends(row.kind):
            if _fail_in_doubt(engine, row_id, resends, why, now):
                failed += 1
            continue
        marked = in_doubt or (row.last_error or "").startswith(IN_DOUBT)
        note = why if not marked or why.startswith(IN_DOUBT) else IN_DOUBT + why
        attempts = row.attempts + 1
        with engine.begin() as conn:
            result = conn.execute(
                update(Outbox)
                .where(Outbox.id == row_id, Outbox.attempts == row.attempts, _open())  # type: ignore[arg-type]
                .values(
                    status="queued",
                    attempts=attempts,
                    last_error=note[:500],
                    next_attempt_at=now + backoff(attempts, row.kind),
                    claimed_by=None,
                    claimed_at=None,
                )
            )
        deferred += result.rowcount
    return deferred, failed


def _give_up_if_due(engine: Engine, row_id: int, why: str, now: datetime) -> bool:
    """Count a refusal already deferred in this run toward giving up; True when failed.

    Like ``_defer(give_up=True)``, applied at the end of the run once the refusal is
    known to be the row's own (the relay took other mail, or refused others otherwise).
    """
    with session_scope(engine) as session:
        row = session.get(Outbox, row_id)
    if row is None or row.status != "queued":
        return False
    first = _first_refusal(engine, row, now)
    if now - first < give_up_after(row.kind):
        return False
    return _fail(engine, row_id, f"gave up after {now - first}: {why}", now, codes="4xx")


def _refusal_events(row: Outbox | _Job, kind: str) -> ColumnElement[bool]:
    """This row's own events of ``kind`` + its kind (e.g. ``in-doubt-resend:alert``)."""
    detail = f"outbox {row.id}"
    same_case = (
        col(Event.case_id).is_(None) if row.case_id is None else col(Event.case_id) == row.case_id
    )
    return same_case & (col(Event.kind) == f"{kind}{row.kind}") & (col(Event.detail) == detail)


def _first_refusal(engine: Engine, row: Outbox, now: datetime) -> datetime:
    """When this row first failed by its own fault, recorded (as an event) if it is now.

    The give-up clock starts here rather than at the row's creation: after a day without
    a relay, an acknowledgement's first greylisting 451 must not fail it for good.
    (A column on ``Outbox`` would be the natural place; the event needs no migration and
    is part of the audit trail.) A follow-up row (``<kind>-retry``) was created because
    its recipients had just been refused for now, so its clock starts at its creation,
    as ``_chain_first_refusal`` has it for a retry of a retry.
    """
    with session_scope(engine) as session:
        seen = session.exec(
            select(Event.at).where(_refusal_events(row, FIRST_REFUSAL)).order_by(Event.at)  # type: ignore[arg-type]
        ).first()
        if seen is not None:
            return from_db(seen) or now
        first = now
        if row.kind.endswith("-retry"):
            first = min(now, from_db(row.created_at) or now)
        record_event(
            session, f"{FIRST_REFUSAL}{row.kind}", row.case_id, f"outbox {row.id}", at=first
        )
    return first


def _in_doubt_resends(engine: Engine, row: Outbox) -> int:
    """How many times this row was resent while its delivery was in doubt."""
    with engine.connect() as conn:
        query = select(func.count()).where(_refusal_events(row, "in-doubt-resend:"))
        return int(conn.execute(query).scalar_one())


def _fail(
    engine: Engine, row_id: int, why: str, now: datetime, *, codes: str, refused: int = 0
) -> bool:
    """Fail a row for good (conditional, like ``_defer``); False when it was not ours.

    ``why`` (the server's reply) is stored in ``last_error`` and the event; the log only
    gets ``codes``, the row, kind and case, since a reply may name the address.
    ``refused``: how many of its recipients the server refused for good at RCPT; for an
    urgent row a ``recipients-refused`` event says so, so that the failover, which goes
    to the same addresses, is not taken for the case's first such refusal.

    An urgent row of a case is logged here at WARNING only: ``intake.escalate`` reports
    each failed alert, retry and escalation of an unacknowledged case once at ERROR
    (and fails it over), one ERROR for one failure (review 5, finding 9).
    """
    with session_scope(engine) as session:
        result = session.execute(
            update(Outbox)
            .where(Outbox.id == row_id, _open())  # type: ignore[arg-type]
            .values(status="failed", attempts=Outbox.attempts + 1, last_error=why[:500])
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        row = session.get(Outbox, row_id)
        assert row is not None
        if row.kind == "ack" and row.case_id:
            case = session.get(Case, row.case_id)
            if case:
                # in doubt: it most likely arrived, but nobody can tell (never resent)
                case.ack_state = "ack_in_doubt" if codes == "in-doubt" else "ack_failed"
                # List the case again in the next digests, now flagged, so that someone
                # phones the resident instead.
                session.execute(delete(DigestEntry).where(col(DigestEntry.case_id) == row.case_id))
        if row.kind == "digest":
            _relist(session, row, now, in_doubt=codes == "in-doubt")
        record_event(session, f"failed:{row.kind}", row.case_id, why[:200], at=now)
        if refused and row.kind in URGENT_KINDS:
            record_event(
                session,
                REFUSED_FOR_GOOD,
                row.case_id,
                f"outbox {row_id}: {refused} recipient(s)",
                at=now,
            )
        kind, case_id = row.kind, row.case_id
    urgent = kind in URGENT_KINDS
    # Without a case nothing in intake.escalate looks at it: this is its only report. A
    # digest neither: its cases wait for the next one, and someone should know why.
    digest = kind in ("digest", "digest-retry")
    level = logging.ERROR if (urgent and case_id is None) or digest else logging.WARNING
    if urgent and kind.endswith("-retry"):
        # Only the recipients refused for now when the original went out: the others
        # have it (review 2, finding 10).
        what = "some recipients of this urgent mail never got it (the others did)"
    elif urgent:
        what = "nobody got this urgent mail (escalation reports it and fails it over)"
    elif kind == "digest":
        what = "partner digest failed; its cases are listed again in the next digest"
    elif digest:
        what = "some recipients of a partner digest never got it (the others did)"
    else:
        what = "not delivered"
    log.log(
        level,
        "outbox mail failed for good: %s",
        what,
        extra={"outbox": row_id, "kind": kind, "case": case_id, "codes": codes},
    )
    return True


def _relist(session: Session, row: Outbox, now: datetime, *, in_doubt: bool) -> None:
    """Put the cases of a digest that failed for good back for the partner's next one.

    Why: ``DigestEntry`` rows are written when a digest is queued, and a case with one is
    never listed for that partner again. A digest refused for good (a 500 to a long line,
    a content filter, a mistyped partner address) or given up after a day of 4xx left
    its cases recorded as sent to a partner who never saw them: lost routing. Only this
    row's entries go, so a case in a digest that was delivered is never listed twice; a
    ``failed:digest`` event per case says so where ``show`` lists its history. (A
    ``digest-retry`` row is left alone: the partner's other addresses got the digest.)
    One whose delivery stayed in doubt (it may have arrived) is listed again as well: a
    case shown twice costs a partner a minute, a case never shown a resident's answer.
    """
    entries = session.exec(select(DigestEntry).where(DigestEntry.outbox_id == row.id)).all()
    what = "delivery in doubt" if in_doubt else "not delivered"
    detail = f"partner {row.partner} (outbox {row.id}): {what}; listed in the next digest"
    for case_id in sorted({e.case_id for e in entries}):
        record_event(session, "failed:digest", case_id, detail, at=now)
    session.execute(delete(DigestEntry).where(col(DigestEntry.outbox_id) == row.id))


def deliver_outbox(
    settings: SmtpSettings,
    engine: Engine,
    now: datetime,
    mailbox: str | None = None,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> SendReport:
    """Deliver every due outbox row (alerts first), of one mailbox when given.

    Safe to call from several threads and several worker processes: each row is claimed
    with a compare-and-set update before it is handed to the server. ``now`` is the
    caller's clock; the time spent waiting for the process lock and sending is added to
    it, so a claim carries the moment it was really taken (another host judges stale
    claims by it).

    ``should_stop`` (the worker's stop flag) is asked before each next row is claimed,
    and before connecting: once it says so the run ends after the mail in hand, and the
    rest stays queued. Without it a run sent every due mail before the worker could
    stop, each up to ``[smtp] timeout`` per step with a slow relay, and systemd's
    SIGKILL landed in the middle of one (review rvr, finding 2).
    """
    started = time.monotonic()
    base = to_db(now)
    stop = should_stop or (lambda: False)

    def clock() -> datetime:
        return base + timedelta(seconds=time.monotonic() - started)

    with _DELIVERY_LOCK:
        if stop():  # it waited for the lock while another thread's run was stopping
            return SendReport()
        return asyncio.run(_deliver(settings, engine, clock(), mailbox, clock, stop))


@dataclass
class Waiting:
    """What a run leaves undelivered, for ``service.py once``'s exit status and stderr.

    ``urgent``: alerts, escalations and their retries still queued (or held by a sender
    that died), plus cases whose urgent mail was refused for good in this run while none
    of its urgent mail reached the server in it: nobody was told of those cases.
    ``acks``: acknowledgements to residents still queued.
    """

    urgent: int = 0
    acks: int = 0
    # Follow-ups for recipients a server put off (4xx) while it took the alert for the
    # others (``<kind>-retry``): a person has the case, so these do not make exit 3.
    partial: int = 0


def waiting_after_run(engine: Engine, mailbox: str, since: datetime, now: datetime) -> Waiting:
    """What of ``mailbox``'s mail is still undelivered at ``now``, a run begun at ``since``.

    Why: ``once`` runs from cron, which tells the administrator only about a run that
    exits non-zero or prints something; an alert deferred because the relay is down used
    to end in exit 0 and reach nobody. A row another live worker is sending right now is
    on its way and does not count; one whose sender died does (``claim_is_dead``). A
    refused alert that was failed over to someone in the same run counts as delivered:
    a person has the case."""
    start, at = to_db(since), to_db(now)
    waiting = Waiting()
    counted: set[int | None] = set()  # cases with an urgent row counted as waiting
    with session_scope(engine) as session:
        rows = session.exec(
            select(Outbox).where(
                Outbox.mailbox == mailbox,
                col(Outbox.status).in_(("queued", "sending")),
                col(Outbox.kind).in_((*URGENT_KINDS, "ack")),
            )
        ).all()
        for row in rows:
            if row.status == "sending" and not claim_is_dead(row.claimed_by, row.claimed_at, at):
                continue
            if row.kind == "ack":
                waiting.acks += 1
            elif row.kind.endswith("-retry"):
                # Made only when the server accepted the mail for other recipients
                # (review rv11b F4: a greylisted backup address paged the administrator
                # although the on-call person had the alert).
                waiting.partial += 1
                counted.add(row.case_id)  # its refusals, if any, reached someone too
            else:
                waiting.urgent += 1
                counted.add(row.case_id)
        refused = session.exec(
            select(Event.case_id)
            .join(Case, col(Case.id) == col(Event.case_id))
            .where(
                Case.mailbox == mailbox,
                col(Event.kind).in_([f"failed:{kind}" for kind in URGENT_KINDS]),
                col(Event.at) >= start,
            )
            .distinct()
        ).all()
        for case_id in refused:
            if case_id in counted:
                continue  # its failover (or a retry) still waits: counted above
            reached = session.exec(
                select(func.count())
                .select_from(Outbox)
                .where(
                    Outbox.case_id == case_id,
                    col(Outbox.kind).in_(URGENT_KINDS),
                    Outbox.status == "sent",
                    col(Outbox.sent_at) >= start,
                )
            ).one()
            waiting.urgent += 0 if reached else 1
    return waiting
