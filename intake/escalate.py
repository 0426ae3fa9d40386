"""Escalate: when nobody has answered an urgent alert, tell the backup people, again and again.

Contract. Input: the service and the time (``now``; only the scheduler reads the clock).
Output: escalation mails queued in the outbox (delivered later by ``intake.send``) and an
``Event`` per escalation. It never sends mail itself and never touches the resident. It
reads what ``intake.send`` recorded about each row (``queued``/``sending``/``sent``/
``failed``) and never changes a row's delivery state.

When is an alert answered? When the case has an ``alert-acknowledged`` event for it: the
worker records one when an on-call (or backup) address replies to the alert or to an
escalation (RFC 5322 In-Reply-To/References), its detail naming the row replied to
(``outbox N: ...``), which answers that row's alert and every earlier one, not a later
alert queued in the same poll batch; ``python service.py ack CASE`` records one (naming
no row) with the staff member as actor, which counts from its time: at or after the
alert was queued.

Timing (configurable under ``[oncall]`` in the config, defaults in brackets):
``escalate_after_minutes`` [30] after the alert is queued the first escalation goes to
whoever got the alert + ``oncall.to`` + ``oncall.backup`` (+ ``oncall.off_hours`` when the
office is shut now); then every ``escalate_every_minutes`` [30] another, up to
``escalate_max`` [3] escalations per alert. These are reminders: a failover (below) is
queued whatever the cap and does not count toward it, but the next reminder still waits
an interval after it was delivered.

Only escalations that reached the server (``sent``) or were refused for good (``failed``)
count, and no further one is queued while the previous one is still undelivered: during
an SMTP outage the cap used to be spent on mails nobody had received, and after recovery
they all arrived within minutes and then nothing more. The next escalation is due one
interval after the previous one was *delivered*, so people get the interval to react.

A failed alert (the server refused it for good: a deleted or mistyped on-call address, a
content filter) is escalated at once, without waiting for the delay and even with
``escalate_max = 0``, to every on-call address including ``backup`` and ``off_hours``:
otherwise nobody would hear of the case for half an hour, or ever. So is an alert the
city's relay accepted and that later came back as a bounce (``intake.pipeline`` records
an ``alert-bounced`` event naming the row: the usual way a bad address fails behind a
relay), and one whose ``alert-retry`` failed (night duty's mailbox full: on-call has it,
the person on shift does not); those go to the on-call addresses the alert was not for.
The failover is owed until an escalation has been queued since the failure was known:
one queued earlier (during an outage, before the refusal came) quoted the refused words,
so neither its being still on its way nor its being refused in turn holds the failover
back or counts as having told anyone.
An alert the mail server has still not taken ``UNDELIVERED_AFTER`` (3 minutes) after it
was queued, whatever the reason (a relay refusal ``intake.send`` reads as the relay's,
deferrals read as relay-wide, a restart, an outage), is failed over the same way, once,
to the on-call addresses it was not for, even with ``escalate_max = 0``: its notice says
the alert could not be sent yet. That notice is the alert's failover: a refusal that
comes later is logged, not failed over again. An alert taken by the server (``sent``,
also when a retry row for some recipients is pending) is never late.
Every escalation of such an alert carries no word of the consultation (case number,
time, "not delivered", ``show CASE``): a content filter that refused the alert would
refuse its words again, in every escalation. Every failed or bounced alert, retry or
escalation is logged once at ERROR (case number and outbox row, never an address) and
recorded as an ``alert-undelivered`` event; one pass per mailbox runs at a time
(``intake.locks.serialise``), so two workers never both log it, and logs come after the commit.

Which alerts are looked at: by state, not by age (``_candidates``): an open,
unacknowledged case whose alert has escalations left stays due after an outage of any
length.

Also here: ``callback_due`` — when an urgent case must be called back — because the
alert, the ``show`` command and the report must all agree on it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import TYPE_CHECKING

from sqlalchemy import String, and_, cast, exists, func, literal, or_
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from intake.businessdays import BusinessCalendar, format_day_ja
from intake.compose import _base_message, render_alert, set_thread_headers, with_ack_code
from intake.errors import IntakeError
from intake.locks import serialise
from intake.store import (
    Case,
    Event,
    Outbox,
    StoredMessage,
    from_db,
    record_event,
    session_scope,
    to_db,
)

if TYPE_CHECKING:
    from intake.config import Settings
    from intake.pipeline import Service

log = logging.getLogger(__name__)

ACK_EVENT = "alert-acknowledged"
ESCALATED_EVENT = "escalated"
CALLBACK_DONE = "callback-done"  # recorded by `callback CASE --done`; read by the report
_NUMBER = re.compile(r"^\s*[Cc]?0*(\d{1,9})\s*$")


class CaseNotFound(IntakeError):
    """A staff command named a case number that is not in the database."""


def utc(moment: datetime) -> datetime:
    """Aware UTC, whatever the database handed back (naive UTC or aware)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_case_number(text: str) -> int:
    """``C000042``, ``c42`` or ``42`` -> 42. Raises ``CaseNotFound`` for anything else."""
    m = _NUMBER.match(text)
    if not m:
        raise CaseNotFound(f"{text!r} is not a case number; write it as C000042 (or 42)")
    return int(m.group(1))


def case_by_number(session: Session, number: str, mailbox: str | None = None) -> Case:
    """The case staff named, or ``CaseNotFound`` telling them how to list the cases.

    With ``mailbox``, a case of another mailbox (another municipality) is not found."""
    case = session.get(Case, parse_case_number(number))
    if case is None or (mailbox is not None and case.mailbox != mailbox):
        raise CaseNotFound(f"no case {number}; `python service.py cases` lists the case numbers")
    return case


def add_event(
    session: Session, kind: str, case_id: int | None, detail: str, actor: str, now: datetime
) -> Event:
    """An audit event at ``now`` (not at the wall clock, so tests and reports agree)."""
    return record_event(session, kind, case_id, detail, actor=actor, at=now)


# --- pure timing -----------------------------------------------------------------------


@dataclass(frozen=True)
class EscalationPolicy:
    """How long to wait before escalating, how often to repeat, and when to stop."""

    delay: timedelta = timedelta(minutes=30)
    interval: timedelta = timedelta(minutes=30)
    cap: int = 3


def next_escalation_at(
    alert_at: datetime,
    escalations_so_far: int,
    policy: EscalationPolicy = EscalationPolicy(),
    last_escalated_at: datetime | None = None,
) -> datetime | None:
    """When escalation number ``escalations_so_far + 1`` is due, or None past the cap.

    ``escalations_so_far`` counts the reminders that were delivered (or refused for
    good), ``last_escalated_at`` is when the last escalation, a failover included, was
    (a failover is no reminder: ``alert_state``). On the schedule
    ``alert_at + delay + interval * n``, but never sooner than ``interval`` after the
    previous escalation reached the server: after an outage the overdue ones are spread
    out, and each one gives its readers a full interval to answer.
    """
    if escalations_so_far >= policy.cap:
        return None
    due = alert_at + policy.delay + policy.interval * escalations_so_far
    if last_escalated_at is not None:
        due = max(due, last_escalated_at + policy.interval)
    return due


def escalation_due(
    alert_at: datetime,
    acknowledged_at: datetime | None,
    escalations_so_far: int,
    now: datetime,
    policy: EscalationPolicy = EscalationPolicy(),
    last_escalated_at: datetime | None = None,
    *,
    pending: bool = False,
    alert_failed: bool = False,
    failover: bool = False,
) -> bool:
    """True when another escalation must be queued now for an alert queued at ``alert_at``.

    Not due once acknowledged (at or before ``now``), while an escalation is still
    ``pending`` (queued, not yet delivered: another one would only pile up behind it in an
    SMTP outage), once ``policy.cap`` escalations were delivered, or before
    ``alert_at + delay + interval * escalations_so_far``. Due at once, whatever the delay
    and the cap, when the alert itself ``alert_failed`` (refused for good) and no
    escalation has been tried yet: nobody has been told about the case at all. Due at once
    whatever is pending, done or refused when a ``failover`` is owed (the caller knows
    the alert was refused and no escalation has been queued since that was known): an
    escalation queued before carries the resident's words the filter refused, and waiting
    for it, or counting it, left nobody told for a whole interval.
    """
    if acknowledged_at is not None and acknowledged_at <= now:
        return False
    if failover:
        return True
    if pending:
        return False
    if alert_failed and escalations_so_far == 0:
        return True
    due = next_escalation_at(alert_at, escalations_so_far, policy, last_escalated_at)
    return due is not None and now >= due


def callback_due(received: datetime, calendar: BusinessCalendar) -> datetime:
    """When staff must have called back the resident of an urgent case received at ``received``.

    Received during office hours: by that day's closing time. Otherwise (night, weekend,
    public or substitute holiday, year-end closure, city closure day): by the next
    business morning's opening — not noon as for an ordinary reply, since the case is
    urgent and the on-call person has already been alerted at once.
    """
    if calendar.is_open(received):
        local = received.astimezone(calendar.tz)
        return datetime.combine(local.date(), calendar.close, calendar.tz)
    return calendar.next_opening(received)


def escalation_policy(settings: Settings) -> EscalationPolicy:
    """The policy from ``[oncall]`` (``escalate_after_minutes``, ``escalate_every_minutes``,
    ``escalate_max``), validated when the config was loaded."""
    oc = settings.oncall
    return EscalationPolicy(
        timedelta(minutes=oc.escalate_after_minutes),
        timedelta(minutes=oc.escalate_every_minutes),
        oc.escalate_max,
    )


# --- the database side -----------------------------------------------------------------


DELIVERED = "sent"
REFUSED = "failed"  # intake.send: the server refused it for good (5xx), never retried
UNDELIVERED_EVENT = "alert-undelivered"  # a failed alert/escalation was seen and logged
# An alert the mail server has still not taken this long after it was queued is failed
# over (content-free) to the other on-call addresses, whatever holds it up: a relay that
# answers "relay access denied" for the on-call address while nothing else is in the
# queue (read as the relay refusing us), two deferred addresses of one alert read as the
# relay's own trouble, a relay state lost at a restart, or a reason nobody foresaw. The
# README promises an alert within seconds (p99 target 2 s) and a healthy relay takes an
# urgent row on the first run or its retries at 30 s, 1 min and 2 min: 3 minutes is well
# past all of them yet early for someone in crisis. In a relay outage the notice waits in
# the queue with everything else and then tells the backup the alert was late: true.
UNDELIVERED_AFTER = timedelta(minutes=3)
LATE_EVENT = "alert-late"  # the alert was seen still undelivered (detail ``outbox N``)


def _resolved_at(row: Outbox) -> datetime:
    """When a delivered or failed row was last handed to the server.

    ``sent_at`` for a sent row; a failed row keeps the ``claimed_at`` of the attempt that
    was refused (``intake.send`` sets it when it takes the row), else its creation time."""
    return utc(row.sent_at or row.claimed_at or row.created_at)


BOUNCED_EVENTS = ("alert-bounced", "escalation-bounced")  # intake.pipeline: "outbox N: ..."
_OUTBOX_ROW = re.compile(r"^outbox (\d+)\b")  # an event naming the outbox row it is about


@dataclass(frozen=True)
class AlertState:
    """The latest alert of a case and what has happened to it since."""

    case_id: int
    alert: Outbox
    alert_at: datetime
    acknowledged_at: datetime | None
    # Reminders since this alert that were delivered, or refused for good once it was
    # known undelivered (``escalate_max`` counts these; a failover is not one).
    escalations: int
    escalations_total: int  # for the case, across alerts (numbers the dedupe keys)
    last_escalated_at: datetime | None  # when the last escalation (or failover) was delivered
    pending: bool = False  # an escalation since this alert is still queued or sending
    # This alert, its retries, its escalations and their retries refused for good or bounced.
    failed_rows: tuple[Outbox, ...] = ()
    bounced: frozenset[int] = frozenset()  # ids of those rows that came back as a bounce
    # An escalation was queued after the alert was known undelivered (its failover, or the
    # schedule's when there was nobody else to fail over to). One queued before the
    # refusal was known carried the words that were refused: it told nobody for sure.
    failed_over: bool = False
    # Not taken by the mail server ``UNDELIVERED_AFTER`` after it was queued (still
    # queued or sending): failed over like an undelivered one (``failed_over`` counts
    # from when the lateness was noticed).
    late: bool = False

    @property
    def alert_failed(self) -> bool:
        """Nobody the alert was addressed to has it: refused for good, or bounced.

        A relay accepts any recipient and reports a mistyped or deleted address later, as
        a bounce in our mailbox (``alert-bounced``): the common failure in this deployment,
        so it counts as a refusal."""
        return self.alert.status == REFUSED or self.alert.id in self.bounced

    @property
    def retry_failed(self) -> bool:
        """Some of the alert's recipients never got it (their ``alert-retry`` failed)."""
        return any(row.kind == "alert-retry" for row in self.failed_rows)

    @property
    def undelivered(self) -> bool:
        """The alert missed someone it was meant for: worth telling the others at once."""
        return self.alert_failed or self.retry_failed

    @property
    def failover_owed(self) -> bool:
        """The alert missed someone or is late, and no escalation was queued since that
        was known: one content-free failover per alert, whichever came first."""
        return (self.undelivered or self.late) and not self.failed_over


def _bounced_rows(session: Session, case_id: int) -> set[int]:
    """Outbox rows of ``case_id`` that came back as a bounce (``intake.pipeline`` records
    an ``alert-bounced``/``escalation-bounced`` event naming the row)."""
    found: set[int] = set()
    for event in session.exec(
        select(Event).where(Event.case_id == case_id, col(Event.kind).in_(BOUNCED_EVENTS))
    ):
        m = _OUTBOX_ROW.match(event.detail)
        if m:
            found.add(int(m.group(1)))
    return found


def _alert_of(row: Outbox, rows: list[Outbox]) -> Outbox | None:
    """The alert a row of the case belongs to: itself, the row a ``-retry`` retries (key
    ``retry:<id>``, followed to its origin), or for an escalation the latest alert
    queued before it (an escalation is queued for the case's latest alert)."""
    by_id = {r.id: r for r in rows}
    seen: set[int | None] = set()
    while row.kind.endswith("-retry") and row.dedupe_key.startswith("retry:"):
        seen.add(row.id)
        try:
            parent = by_id.get(int(row.dedupe_key.removeprefix("retry:")))
        except ValueError:
            return None
        if parent is None or parent.id in seen:
            return None
        row = parent
    if row.kind == "alert":
        return row
    if row.kind == "escalation":
        earlier = [r for r in rows if r.kind == "alert" and (r.id or 0) < (row.id or 0)]
        return max(earlier, key=lambda r: r.id or 0, default=None)
    return None


def _answers(event: Event, latest: Outbox, rows: list[Outbox], alert_at: datetime) -> bool:
    """Whether an ``alert-acknowledged`` event answers the latest alert.

    An event whose detail names an outbox row (``outbox N: ...``, the mail the on-call
    person replied to) answers that row's alert and every alert before it, with their
    escalations: a reply to alert 1 processed in the same poll batch as an urgent
    follow-up (one ``now`` for the batch) does not acknowledge the follow-up's alert 2,
    which nobody has read yet. One naming no row of the case (the ``ack`` command, older
    events) counts by its time: at or after the alert was queued."""
    m = _OUTBOX_ROW.match(event.detail or "")
    if m:
        named = next((r for r in rows if r.id == int(m.group(1))), None)
        if named is not None:
            alert = _alert_of(named, rows)
            return alert is not None and (alert.id or 0) >= (latest.id or 0)
    return utc(event.at) >= alert_at


def alert_state(session: Session, case_id: int, now: datetime | None = None) -> AlertState | None:
    """Where the latest alert of ``case_id`` stands, or None when it never had one.

    With ``now``, also whether the alert is late (see ``UNDELIVERED_AFTER``)."""
    rows = session.exec(
        select(Outbox).where(
            Outbox.case_id == case_id,
            col(Outbox.kind).in_(["alert", "alert-retry", "escalation", "escalation-retry"]),
        )
    ).all()
    alerts = [row for row in rows if row.kind == "alert"]
    if not alerts:
        return None
    latest = max(alerts, key=lambda row: (utc(row.created_at), row.id or 0))
    alert_at = utc(latest.created_at)
    acks = [
        utc(e.at)
        for e in session.exec(
            select(Event).where(Event.case_id == case_id, Event.kind == ACK_EVENT)
        )
        if _answers(e, latest, list(rows), alert_at)
    ]
    escalations = [row for row in rows if row.kind == "escalation"]
    since = [row for row in escalations if utc(row.created_at) >= alert_at]
    retries = [row for row in rows if row.kind == "alert-retry" and utc(row.created_at) >= alert_at]
    # An escalation's follow-up to the recipients that answered 4xx: when it fails, some
    # of the escalation's readers never had it; logged once like any other (not counted
    # as an escalation, and no failover: the alert itself reached its readers).
    escalation_retries = [
        row for row in rows if row.kind == "escalation-retry" and utc(row.created_at) >= alert_at
    ]
    # Anything not yet sent or failed (queued, sending, or a state intake.send may add)
    # is still on its way: it neither counts nor lets another one be queued behind it.
    done = [row for row in since if row.status in (DELIVERED, REFUSED)]
    bounced = _bounced_rows(session, case_id)
    failed = tuple(
        row
        for row in (latest, *retries, *since, *escalation_retries)
        if row.status == REFUSED or (not row.kind.endswith("-retry") and row.id in bounced)
    )
    # When the escalation side first knew the alert (or a retry of it) missed someone:
    # ``_notice_failures`` records the ``alert-undelivered`` event in that same pass.
    noticed = {
        e.detail: utc(e.at)
        for e in session.exec(
            select(Event).where(Event.case_id == case_id, Event.kind == UNDELIVERED_EVENT)
        )
    }
    known_at = min(
        (
            noticed[f"outbox {row.id}"]
            for row in failed
            if row.kind in ("alert", "alert-retry") and f"outbox {row.id}" in noticed
        ),
        default=None,
    )
    late = (
        now is not None
        and latest.status not in (DELIVERED, REFUSED)
        and utc(now) - alert_at >= UNDELIVERED_AFTER
    )
    # A late alert's notice is its failover: when the alert is refused later on, the
    # others already know (told content-free); the refusal is logged, not sent again.
    late_at = min(
        (
            utc(e.at)
            for e in session.exec(
                select(Event).where(
                    Event.case_id == case_id,
                    Event.kind == LATE_EVENT,
                    Event.detail == f"outbox {latest.id}",
                )
            )
        ),
        default=None,
    )
    if late_at is not None:
        known_at = late_at if known_at is None else min(known_at, late_at)
    failed_over = known_at is not None and any(utc(row.created_at) >= known_at for row in since)
    # Toward ``escalate_max`` (and the schedule): the delivered reminders, and the refused
    # ones queued once the alert was known undelivered (or late). One refused before that
    # quoted the words that were refused and reached nobody: counting it spent a reminder
    # on nobody. A failover (the notice of a refused, bounced, partly failed or late alert,
    # queued whatever the cap, even with ``escalate_max = 0``) is no reminder either: it
    # tells the others the alert did not get through, and counting it put the on-call
    # person's first reminder an interval late after an outage (never with a cap of 1).
    failovers = _failover_rows(session, case_id, since)
    counted = [
        row
        for row in done
        if row.id not in failovers
        and not (row.status == REFUSED and known_at is not None and utc(row.created_at) < known_at)
    ]
    # The next reminder waits an interval after the last escalation, a failover included,
    # reached the server: its readers get the interval to answer, whatever it was.
    spaced = [*counted, *(row for row in done if row.id in failovers)]
    last = max((_resolved_at(row) for row in spaced), default=None)
    return AlertState(
        case_id,
        latest,
        alert_at,
        min(acks) if acks else None,
        len(counted),
        len(escalations),
        last,
        pending=len(done) < len(since),
        failed_rows=failed,
        bounced=frozenset(row.id for row in failed if row.id in bounced),
        failed_over=failed_over,
        late=late,
    )


# How the ``escalated`` event of a failover begins (``_queue_escalation``): what
# ``_failover_rows`` recognises a failover by, and ``_candidates`` by "the alert " (events
# already stored say the same, so these words are kept as they are).
FAILOVER_UNDELIVERED = "the alert was not delivered; "
FAILOVER_LATE = "the alert is late; "
_FAILOVER_DETAIL = re.compile(
    f"^(?:{re.escape(FAILOVER_UNDELIVERED)}|{re.escape(FAILOVER_LATE)})escalation (\\d+) to "
)


def _failover_rows(session: Session, case_id: int, since: list[Outbox]) -> set[int]:
    """Ids of the escalations in ``since`` that were queued as failovers: what their
    ``escalated`` event says (``_queue_escalation``), matched to the row by the number in
    its key (``escalation:CASE:N``). Also right for rows queued before this was read."""
    if not since:
        return set()
    numbers: set[int] = set()
    for event in session.exec(
        select(Event).where(Event.case_id == case_id, Event.kind == ESCALATED_EVENT)
    ):
        m = _FAILOVER_DETAIL.match(event.detail or "")
        if m:
            numbers.add(int(m.group(1)))
    keys = {f"escalation:{case_id}:{n}" for n in numbers}
    return {row.id for row in since if row.id is not None and row.dedupe_key in keys}


def _unique(addresses: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for address in addresses:
        if address.lower() not in (s.lower() for s in seen):
            seen.append(address)
    return seen


def _recipients(svc: Service, state: AlertState, now: datetime, failover: bool) -> list[str]:
    """Who gets an escalation: whoever got the alert, ``to``, and ``backup``.

    ``off_hours`` (night duty) only when the office is shut now or the alert went to them
    anyway: during office hours they are off shift, and the config says they are alerted
    "outside office hours". A ``failover`` for a refused alert goes to every on-call
    address, night duty included, since the one the alert was for cannot be reached; the
    refused addresses stay on it (a content filter refused the alert, not the address: the
    content-free failover reaches them). A failover for a bounced alert, or for an alert
    some of whose recipients never got it (a failed ``alert-retry``), goes to the others
    only: the bounced address would bounce again, and the rest already have the alert.
    """
    if failover and state.alert.status != REFUSED:
        return _others(svc, state)
    oc = svc.settings.oncall
    night = failover or not svc.calendar.is_open(now)
    return _unique(
        (
            *json.loads(state.alert.recipients or "[]"),
            *oc.to,
            *(oc.off_hours if night else ()),
            *oc.backup,
        )
    )


def _others(svc: Service, state: AlertState) -> list[str]:
    """On-call addresses the (refused) alert was not addressed to: who else could be told."""
    had = {a.lower() for a in json.loads(state.alert.recipients or "[]")}
    everyone = _unique(svc.settings.oncall.everyone)
    return [a for a in everyone if a.lower() not in had]


def _alerted_message(session: Session, case: Case, alert: Outbox) -> StoredMessage | None:
    """The stored mail the alert was about (its dedupe key is ``alert:message:ID``)."""
    prefix = "alert:message:"
    if not alert.dedupe_key.startswith(prefix):
        return None
    try:
        message_id = int(alert.dedupe_key[len(prefix) :])
    except ValueError:
        return None
    msg = session.get(StoredMessage, message_id)
    return msg if msg is not None and msg.case_id == case.id else None


def _day_time_ja(moment: datetime, tz: object) -> str:
    """``11月25日(水) 10:00``: a time with its day, as the alert shows it. Why the day: a
    notice read after midnight (an outage, a late failover) must not leave "10:00" open
    to "today"."""
    local = moment.astimezone(tz)  # type: ignore[arg-type]
    return f"{format_day_ja(local)} {local.strftime('%H:%M')}"


def _deadline_ja(
    due: datetime, received: datetime, now: datetime, calendar: BusinessCalendar
) -> str:
    """The callback deadline as the alert template words it (``alert_context``).

    Why not the bare date: outside office hours it is the next business morning, and a
    backup woken at night who reads "期限 11月30日(月) 8時30分" reads "it can wait".
    """
    local = due.astimezone(calendar.tz)
    clock = f"{local.hour}時" + (f"{local.minute}分" if local.minute else "")
    day = format_day_ja(local)
    if now > due:
        return f"できるだけ早く（期限の {day} {clock} を過ぎています）"
    if not calendar.is_open(received):
        return f"できるだけ早く（遅くとも {day} {clock}）"
    if local.date() == now.astimezone(calendar.tz).date():
        return f"本日 {clock}"
    return f"{day} {clock}"


FAILOVER_SUBJECT = "【至急】当番への通知が届いていない相談"


def _undelivered_notice(
    svc: Service,
    case: Case,
    state: AlertState,
    to: list[str],
    number: int,
    received: datetime,
    now: datetime,
    failover: bool = False,
) -> EmailMessage:
    """The escalation for an alert that did not get through: no word of the consultation.

    Why content-free: a content filter that refused the alert (crisis words, a phone
    number, a link) refuses any mail that quotes them again, so a failover carrying the
    alert's text reached nobody. This says only which case, when it came in, that the
    alert was not delivered and how to read the case (``show``); nothing a filter can
    object to. Built in code, not from a staff-editable template, so an edit can never
    put the resident's words back. Thread headers are set by the caller.

    A ``failover`` is the first mail its readers get about the case (the backup instead
    of the on-call person), so it says why it comes to them, not "re-notice no. 1". Its
    first line still ends with the marker ``intake.quotes`` knows our mail by. Not the
    word 緊急 (nor in the subject): it is the alert's own wording, which the filter that
    refused the alert may be refusing.
    """
    from intake.pipeline import service_command

    tz = svc.calendar.tz
    due = callback_due(received, svc.calendar)
    if state.alert_failed:
        what = (
            "当番への通知メールが届きませんでした（メールサーバーが受け取りを拒否したか、"
            "宛先不明などで戻ってきました）。\n当番はこの相談をまだ知りません。"
        )
    elif state.late:
        queued = _day_time_ja(state.alert_at, tz)
        what = (
            f"当番への通知メール（{queued} 作成）を、まだ送信できていません。\n"
            "当番はこの相談をまだ知らない可能性があります。"
        )
    else:
        what = (
            "当番への通知メールが一部の宛先に送信できませんでした（他の宛先には届いています）。\n"
            "勤務中の担当者がこの相談を知らない可能性があります。"
        )
    # A failover's readers never got a first notice: its subject says what happened, not
    # 再通知. Worded like the alert's (【至急】, what it is, the case number), without 緊急.
    if failover:
        subject = f"{FAILOVER_SUBJECT} {case.number}"
    else:
        subject = f"【至急・再通知】通知が届いていない相談 {case.number}"
    message = _base_message(svc.sender, to, subject, now, "auto-generated", "alert")
    # Its own confirmation code, as every alert and escalation has (``ack_code``).
    code = with_ack_code(message, subject)
    if failover:
        opening = (
            "※ 当番への通知が届いていないため、代わりにお知らせします。"
            "まだ誰も対応の確認をしていません。"
        )
    else:
        opening = f"※ これは再通知（{number}回目）です。まだ誰も対応の確認をしていません。"
    lines = [
        opening,
        "",
        what,
        "代わりに対応してください。",
        "",
        f"受付番号: {case.number}",
        f"受信日時: {_day_time_ja(received, tz)}",
        f"折り返し期限: {_deadline_ja(due, received, now, svc.calendar)}",
        "",
        "内容が原因で届かなかった可能性があるため、このメールには相談の内容を載せていません。",
        "サーバーで次を実行して原文を確認してください。",
        f"  {service_command(svc, 'show', case.number)}",
        "",
        "対応を始めたら、このメールに返信してください（本文は空で構いません）。",
        f"件名の「{case.number}」と「確認コード {code}」は消さずに返信してください。",
        "この2つが件名にないと、対応済みにならず再通知が続きます。",
        f"または（サーバーで）: {service_command(svc, 'ack', case.number)}",
        "",
    ]
    message.set_content("\n".join(lines), charset="utf-8", cte="8bit")
    return message


def _queue_escalation(
    svc: Service,
    session: Session,
    case: Case,
    state: AlertState,
    now: datetime,
    failover: bool = False,
) -> Outbox:
    # Lazy import: pipeline imports half the service; escalate's pure part must not need it.
    from intake.pipeline import alert_context, queue_mail

    number = state.escalations_total + 1  # the row's key: every escalation of the case
    # What its readers are told ("再通知（N回目）"): the reminders of this alert, this one
    # included. A failover is none (it does not count toward ``escalate_max`` either):
    # counting it, the first reminder after one said 2回目 and staff looked for a first.
    reminder = state.escalations + 1
    to = _recipients(svc, state, now, failover)
    # The same facts as the alert: the received time (and so the callback due time) of the
    # mail that raised it, not of the case (a follow-up may come days later), and why it
    # could not be read automatically (a quarantined mail: "look at the original").
    msg = _alerted_message(session, case, state.alert)
    received = utc((from_db(msg.received_at) if msg else None) or case.created_at)
    automatic = None
    if msg is not None:
        automatic = "quarantined" if msg.status == "quarantined" else msg.automatic
    if state.late or any(row.kind != "escalation-retry" for row in state.failed_rows):
        # The alert (or an escalation) did not get through, or has not yet: whatever
        # refused or holds it must find nothing to refuse in this one, and the readers
        # must know nobody may have it. (A failed escalation-retry is a full mailbox or
        # the like at one reader: the notice would wrongly say the alert missed someone.)
        message = _undelivered_notice(
            svc, case, state, to, reminder, received, now, failover=failover
        )
    else:
        message = render_alert(
            svc.env,
            sender=svc.sender,
            to=to,
            case=alert_context(svc, case, received, automatic, now),
            now=now,
            tz=svc.calendar.tz,
            escalation=reminder,
            fallback=True,
        )
    # Thread it under the alert, so a phone shows one conversation and a reply to either
    # is recognised by the worker as the acknowledgement.
    set_thread_headers(message, state.alert.message_id, [])
    row = queue_mail(
        session,
        kind="escalation",
        key=f"escalation:{case.id}:{number}",
        case=case,
        to=to,
        message=message,
        priority=0,
        now=now,
    )
    why = ""
    which = f"{state.escalations + 1} for"
    if failover:
        # ``_failover_rows`` reads this prefix: a failover is not counted as a reminder.
        why = FAILOVER_UNDELIVERED if state.undelivered else FAILOVER_LATE
        which = "a failover, not a reminder, for"
    add_event(
        session,
        ESCALATED_EVENT,
        case.id,
        f"{why}escalation {number} to {len(to)} recipient(s) ({which} "
        f"the alert of outbox {state.alert.id})",
        "service",
        now,
    )
    return row


_Log = tuple[int, str, dict[str, object]]  # level, message, extra: emitted after the commit


def _notice_failures(
    svc: Service, session: Session, case: Case, state: AlertState, now: datetime, failover: bool
) -> list[_Log]:
    """Record each refused or bounced alert, retry or escalation once; say what to log.

    ``intake.send`` marks a refused row ``failed`` and never retries it, and
    ``intake.pipeline`` records a bounce: this is where the on-call path learns of either.
    The ``alert-undelivered`` event marks a row as seen; ``escalate`` holds a lock for its
    pass (``intake.locks.serialise``), so two workers never both find it unmarked, and logs only
    after the commit. Case number and outbox row only: the addresses and the server's
    reply (which often quotes the address) are logged at DEBUG.
    """
    seen = {
        e.detail
        for e in session.exec(
            select(Event).where(Event.case_id == case.id, Event.kind == UNDELIVERED_EVENT)
        )
    }
    others = len(_others(svc, state))
    logs: list[_Log] = []
    for row in state.failed_rows:
        detail = f"outbox {row.id}"
        if detail in seen:
            continue
        add_event(session, UNDELIVERED_EVENT, case.id, detail, "service", now)
        how = "bounced" if row.id in state.bounced else "refused by the mail server"
        if row.kind == "alert-retry":
            what = "urgent alert not delivered to some of its recipients (the others have it)" + (
                "; escalated at once to the other on-call addresses" if failover else ""
            )
        elif row.kind == "alert" and not others:
            what = (
                f"urgent alert {how} and no other on-call address is configured: nobody "
                "has been told; add [oncall] backup and check the on-call address"
            )
        elif row.kind == "alert" and failover:
            what = f"urgent alert {how}; escalated at once to the other on-call addresses"
        elif row.kind == "alert":
            what = f"urgent alert {how}"
        elif row.kind == "escalation-retry":
            what = "escalation of an urgent alert not delivered to some of its recipients"
        else:
            what = f"escalation of an urgent alert {how}"
        logs.append(
            (
                logging.ERROR,
                what,
                {"case": case.number, "outbox": row.id, "kind": row.kind, "other_oncall": others},
            )
        )
        logs.append(
            (
                logging.DEBUG,
                "undelivered row detail",
                {"outbox": row.id, "recipients": row.recipients, "error": row.last_error},
            )
        )
    return logs


def _notice_late(
    svc: Service, session: Session, case: Case, state: AlertState, now: datetime, failover: bool
) -> list[_Log]:
    """Record once that the alert is still undelivered ``UNDELIVERED_AFTER`` after it was
    queued (a ``alert-late`` event naming the row); say what to log: one ERROR.

    Whatever held it (the relay, our reading of the relay's replies, a restart), the
    on-call person may not know of the case: that is an operator's matter at once. Case
    number and outbox row only; the row's last error (it quotes addresses) at DEBUG.
    """
    detail = f"outbox {state.alert.id}"
    seen = session.exec(
        select(Event.id).where(
            Event.case_id == case.id, Event.kind == LATE_EVENT, Event.detail == detail
        )
    ).first()
    if seen is not None:
        return []
    add_event(session, LATE_EVENT, case.id, detail, "service", now)
    minutes = int(UNDELIVERED_AFTER.total_seconds() // 60)
    what = f"urgent alert not taken by the mail server {minutes} minutes after it was queued"
    others = len(_others(svc, state))
    if not others:
        what += (
            " and no other on-call address is configured: nobody may have been told; "
            "add [oncall] backup and check the mail server"
        )
    elif failover:
        what += "; escalated at once to the other on-call addresses"
    extra: dict[str, object] = {
        "case": case.number,
        "outbox": state.alert.id,
        "kind": state.alert.kind,
        "other_oncall": others,
    }
    return [
        (logging.ERROR, what, extra),
        (
            logging.DEBUG,
            "late alert detail",
            {
                "outbox": state.alert.id,
                "status": state.alert.status,
                "error": state.alert.last_error,
            },
        ),
    ]


def _candidates(
    session: Session, mailbox: str, now: datetime, policy: EscalationPolicy
) -> list[int]:
    """Cases whose latest alert may need an escalation now: chosen by state, not by age.

    An alert qualifies while it was queued recently (a refusal or bounce may still come
    in), or while its case is open, it is unacknowledged and either it has reminders left
    (fewer than ``cap`` counted as ``alert_state`` counts them) or it is not known to have
    reached everyone (queued, sending, refused, bounced, a retry of it failed): a refusal
    after an SMTP outage longer than the recent window must still be failed over, even
    with ``cap = 0``. Before, only alerts of the last ~26 h were looked at, and after a
    longer SMTP (or worker) outage the schedule stopped after the first escalation.
    Acknowledged, closed and finished alerts drop out, so the per-minute job stays as
    cheap after years of history.

    "Reminders left" has one definition, ``alert_state``'s (a failover, and a reminder
    refused before the alert was known undelivered, is none). The query only narrows the
    cases down: every escalation since the alert that was delivered or refused
    (``done``) is at least what ``alert_state`` counts, so ``done < cap`` settles it
    without reading the case; past that, only a case whose alert was ever noticed
    undelivered or late (the ``alert-undelivered``/``alert-late`` events recorded in the
    pass that queues a failover, or a failover's own ``escalated`` event) can count
    fewer, and ``alert_state`` counts those few. Before, the query's own count took the
    failover for a reminder: after an outage of over a day the late alert's failover
    and two reminders were ``done == cap``, and its third reminder was never sent.
    """
    alert = aliased(Outbox)
    later = aliased(Outbox)
    done = (
        select(func.count())
        .select_from(later)
        .where(
            later.case_id == alert.case_id,
            later.kind == "escalation",
            later.created_at >= alert.created_at,
            col(later.status).in_([DELIVERED, REFUSED]),
        )
        .scalar_subquery()
    )
    # Acknowledged by time (the ``ack`` command, older events), or by a reply naming a row
    # of the case queued with or after this alert (``outbox N: ...``): a reply to an
    # earlier alert does not take a later one off the list (``alert_state`` decides).
    named = aliased(Outbox)
    prefix = literal("outbox ") + cast(named.id, String)
    acked = or_(
        exists().where(
            col(Event.case_id) == alert.case_id,
            col(Event.kind) == ACK_EVENT,
            col(Event.at) >= alert.created_at,
            ~col(Event.detail).like("outbox %"),
        ),
        exists().where(
            col(Event.case_id) == alert.case_id,
            col(Event.kind) == ACK_EVENT,
            col(named.case_id) == alert.case_id,
            col(named.created_at) >= alert.created_at,
            or_(
                col(Event.detail) == prefix,
                col(Event.detail).like(prefix + ":%"),
                col(Event.detail).like(prefix + " %"),
            ),
        ),
    )
    # Not (yet) known to have reached everyone: still on its way, refused, bounced, or a
    # retry of it failed. Such an alert may need its failover whatever its age and even
    # with ``escalate_max = 0`` (where ``done < cap`` never holds). Over-inclusive on
    # purpose (a bounce of an older alert of the case counts): ``alert_state`` decides.
    retry = aliased(Outbox)
    unfinished = or_(
        col(alert.status).in_(["queued", "sending", REFUSED]),
        exists().where(col(Event.case_id) == alert.case_id, col(Event.kind) == "alert-bounced"),
        exists().where(
            col(retry.case_id) == alert.case_id,
            col(retry.kind) == "alert-retry",
            col(retry.status) == REFUSED,
            col(retry.created_at) >= alert.created_at,
        ),
    )
    # Where ``alert_state`` may count fewer reminders than ``done``: it leaves out only a
    # failover and a refusal from before the alert was known undelivered or late, and
    # neither exists without one of these events of the case (``_failover_rows``,
    # ``_notice_failures``, ``_notice_late``). Over-inclusive too: it only costs a read.
    uncounted = exists().where(
        col(Event.case_id) == alert.case_id,
        or_(
            col(Event.kind).in_([UNDELIVERED_EVENT, LATE_EVENT]),
            and_(col(Event.kind) == ESCALATED_EVENT, col(Event.detail).like("the alert %")),
        ),
    )
    recent = col(alert.created_at) >= to_db(now - _reach(policy))
    open_unacked = and_(col(Case.status) != "closed", ~acked)
    settled = or_(recent, and_(open_unacked, or_(done < policy.cap, unfinished)))
    query = (
        select(alert.case_id, settled)
        .join(Case, Case.id == alert.case_id)  # type: ignore[arg-type]
        .where(
            alert.mailbox == mailbox,
            alert.kind == "alert",
            or_(settled, and_(open_unacked, uncounted)),
        )
        .distinct()
    )
    found: dict[int, bool] = {}
    for case_id, sure in session.exec(query).all():
        if case_id is not None:
            found[case_id] = found.get(case_id, False) or bool(sure)
    return [
        case_id
        for case_id, sure in found.items()
        if sure or _reminders_left(session, case_id, now, policy)
    ]


def _reminders_left(
    session: Session, case_id: int, now: datetime, policy: EscalationPolicy
) -> bool:
    """Whether the latest alert of ``case_id`` has reminders left under ``policy``, counted
    as ``alert_state`` counts them (the one count ``escalation_due`` goes by)."""
    state = alert_state(session, case_id, now)
    return state is not None and state.escalations < policy.cap


def _reach(policy: EscalationPolicy) -> timedelta:
    return policy.delay + policy.interval * (policy.cap + 1) + timedelta(days=1)


def escalate(svc: Service, now: datetime, policy: EscalationPolicy | None = None) -> int:
    """Queue every escalation that is due at ``now``; returns how many were queued.

    Also where a refused or bounced alert or escalation is first seen: it is logged at
    ERROR once, and an alert that missed someone is escalated at once (see the module
    docstring)."""
    policy = policy or escalation_policy(svc.settings)
    queued = 0
    logs: list[_Log] = []
    with session_scope(svc.engine) as session:
        serialise(session, f"escalate:{svc.settings.mailbox.key}")
        for case_id in _candidates(session, svc.settings.mailbox.key, utc(now), policy):
            state = alert_state(session, case_id, utc(now))
            if state is None:
                continue
            case = session.get(Case, case_id)
            if case is None:
                continue
            # A failover only when someone else can be told; otherwise the ordinary
            # schedule goes on (to the same addresses: the refusal may have been passing).
            # Owed until an escalation is queued after the refusal (or the lateness) was
            # known, whatever was pending or refused before it (those quoted the words).
            failover = state.failover_owed and bool(_others(svc, state))
            due = case.status != "closed" and escalation_due(
                state.alert_at,
                state.acknowledged_at,
                state.escalations,
                utc(now),
                policy,
                state.last_escalated_at,
                pending=state.pending,
                failover=failover,
            )
            if state.failed_rows:
                logs += _notice_failures(svc, session, case, state, now, failover and due)
            if state.late:
                logs += _notice_late(svc, session, case, state, now, failover and due)
            if not due:
                continue
            _queue_escalation(svc, session, case, state, now, failover)
            queued += 1
            logs.append(
                (
                    logging.WARNING,
                    "urgent alert not acknowledged; escalated",
                    {"case": case.number, "escalation": state.escalations_total + 1},
                )
            )
    # After the commit: a pass that rolled back logged nothing it did not do.
    for level, what, extra in logs:
        log.log(level, what, extra=extra)
    return queued


@dataclass(frozen=True)
class AckResult:
    number: str
    had_alert: bool
    already: bool  # an acknowledgement of the latest alert existed before this one


def acknowledge_alert(svc: Service, case_number: str, actor: str, now: datetime) -> AckResult:
    """Record that ``actor`` has taken on case ``case_number``: stops its escalation.

    Recorded even when the case had no alert (staff may take a case on before the worker
    ran) or was already acknowledged: the audit trail says who said so, and when.
    """
    with session_scope(svc.engine) as session:
        case = case_by_number(session, case_number, svc.settings.mailbox.key)
        assert case.id is not None
        state = alert_state(session, case.id)
        already = state is not None and state.acknowledged_at is not None
        add_event(session, ACK_EVENT, case.id, "by command `ack`", actor, now)
        return AckResult(case.number, state is not None, already)


__all__ = [
    "ACK_EVENT",
    "CALLBACK_DONE",
    "ESCALATED_EVENT",
    "UNDELIVERED_EVENT",
    "AckResult",
    "AlertState",
    "CaseNotFound",
    "EscalationPolicy",
    "acknowledge_alert",
    "add_event",
    "alert_state",
    "callback_due",
    "case_by_number",
    "escalate",
    "escalation_due",
    "escalation_policy",
    "next_escalation_at",
    "parse_case_number",
    "utc",
]
