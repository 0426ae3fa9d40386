"""Escalate: when nobody has answered an urgent alert, tell the backup people, again and again.

Contract. Input: the service and the time (``now``; only the scheduler reads the clock).
Output: escalation mails queued in the outbox (delivered later by ``intake.send``) and an
``Event`` per escalation. It never sends mail itself and never touches the resident. It
reads what ``intake.send`` recorded about each row (``queued``/``sending``/``sent``/
``failed``) and never changes a row's delivery state.

When is an alert answered? When the case has an ``alert-acknowledged`` event at or after
the alert was queued: the worker records one when an on-call (or backup) address replies
to the alert or to an escalation (RFC 5322 In-Reply-To/References), and
``python service.py ack CASE`` records one with the staff member as actor.

Timing (configurable under ``[oncall]`` in the config, defaults in brackets):
``escalate_after_minutes`` [30] after the alert is queued the first escalation goes to
whoever got the alert + ``oncall.to`` + ``oncall.backup`` (+ ``oncall.off_hours`` when the
office is shut now); then every ``escalate_every_minutes`` [30] another, up to
``escalate_max`` [3] escalations per alert.

Only escalations that reached the server (``sent``) or were refused for good (``failed``)
count, and no further one is queued while the previous one is still undelivered: during
an SMTP outage the cap used to be spent on mails nobody had received, and after recovery
they all arrived within minutes and then nothing more. The next escalation is due one
interval after the previous one was *delivered*, so people get the interval to react.

A failed alert (the server refused it for good: a deleted or mistyped on-call address, a
content filter) is escalated at once, without waiting for the delay and even with
``escalate_max = 0``, to every on-call address including ``backup`` and ``off_hours``:
otherwise nobody would hear of the case for half an hour, or ever. Every failed alert or
escalation is logged once at ERROR (case number and outbox row, never an address) and
recorded as an ``alert-undelivered`` event.

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
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from intake.businessdays import BusinessCalendar
from intake.compose import render_alert
from intake.errors import IntakeError
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

    ``escalations_so_far`` counts the escalations that were delivered (or refused for
    good), ``last_escalated_at`` is when the last of them was. On the schedule
    ``alert_at + delay + interval * n``, but never sooner than ``interval`` after the
    previous escalation reached the server: after an outage the overdue ones are spread
    out, and each one gives its readers a full interval to answer.
    """
    if escalations_so_far >= policy.cap:
        return None
    due = alert_at + policy.delay + policy.interval * escalations_so_far
    if last_escalated_at is not None and escalations_so_far:
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
) -> bool:
    """True when another escalation must be queued now for an alert queued at ``alert_at``.

    Not due once acknowledged (at or before ``now``), while an escalation is still
    ``pending`` (queued, not yet delivered: another one would only pile up behind it in an
    SMTP outage), once ``policy.cap`` escalations were delivered, or before
    ``alert_at + delay + interval * escalations_so_far``. Due at once, whatever the delay
    and the cap, when the alert itself ``alert_failed`` (refused for good) and no
    escalation has been tried yet: nobody has been told about the case at all.
    """
    if acknowledged_at is not None and acknowledged_at <= now:
        return False
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


def _resolved_at(row: Outbox) -> datetime:
    """When a delivered or failed row was last handed to the server.

    ``sent_at`` for a sent row; a failed row keeps the ``claimed_at`` of the attempt that
    was refused (``intake.send`` sets it when it takes the row), else its creation time."""
    return utc(row.sent_at or row.claimed_at or row.created_at)


@dataclass(frozen=True)
class AlertState:
    """The latest alert of a case and what has happened to it since."""

    case_id: int
    alert: Outbox
    alert_at: datetime
    acknowledged_at: datetime | None
    escalations: int  # escalations since this alert that were delivered or failed for good
    escalations_total: int  # for the case, across alerts (numbers the dedupe keys)
    last_escalated_at: datetime | None  # when the last of ``escalations`` was delivered
    pending: bool = False  # an escalation since this alert is still queued or sending
    failed_rows: tuple[Outbox, ...] = ()  # this alert and its escalations refused for good

    @property
    def alert_failed(self) -> bool:
        """The alert itself was refused for good: nobody it was addressed to has it."""
        return self.alert.status == REFUSED


def alert_state(session: Session, case_id: int) -> AlertState | None:
    """Where the latest alert of ``case_id`` stands, or None when it never had one."""
    alerts = session.exec(
        select(Outbox).where(Outbox.case_id == case_id, Outbox.kind == "alert")
    ).all()
    if not alerts:
        return None
    latest = max(alerts, key=lambda row: (utc(row.created_at), row.id or 0))
    alert_at = utc(latest.created_at)
    acks = [
        utc(e.at)
        for e in session.exec(
            select(Event).where(Event.case_id == case_id, Event.kind == ACK_EVENT)
        )
        if utc(e.at) >= alert_at
    ]
    escalations = session.exec(
        select(Outbox).where(Outbox.case_id == case_id, Outbox.kind == "escalation")
    ).all()
    since = [row for row in escalations if utc(row.created_at) >= alert_at]
    # Anything not yet sent or failed (queued, sending, or a state intake.send may add)
    # is still on its way: it neither counts nor lets another one be queued behind it.
    done = [row for row in since if row.status in (DELIVERED, REFUSED)]
    last = max((_resolved_at(row) for row in done), default=None)
    failed = tuple(row for row in (latest, *since) if row.status == REFUSED)
    return AlertState(
        case_id,
        latest,
        alert_at,
        min(acks) if acks else None,
        len(done),
        len(escalations),
        last,
        pending=len(done) < len(since),
        failed_rows=failed,
    )


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
    address, night duty included, since the one the alert was for cannot be reached.
    """
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


_UNDELIVERED_NOTE = (
    "※ 当番への緊急通知は送信できませんでした（メールサーバーが受け取りを拒否しました）。\n"
    "  当番はこの相談をまだ知りません。代わりに対応してください。\n\n"
)


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

    number = state.escalations_total + 1
    to = _recipients(svc, state, now, failover)
    # The same facts as the alert: the received time (and so the callback due time) of the
    # mail that raised it, not of the case (a follow-up may come days later), and why it
    # could not be read automatically (a quarantined mail: "look at the original").
    msg = _alerted_message(session, case, state.alert)
    received = utc((from_db(msg.received_at) if msg else None) or case.created_at)
    automatic = None
    if msg is not None:
        automatic = "quarantined" if msg.status == "quarantined" else msg.automatic
    message = render_alert(
        svc.env,
        sender=svc.sender,
        to=to,
        case=alert_context(svc, case, received, automatic),
        now=now,
        tz=svc.calendar.tz,
        escalation=number,
    )
    if failover:
        # The template speaks of "nobody has confirmed yet"; the backup must also know that
        # the on-call person was never told, or each may assume the other has it.
        body = message.get_content()
        message.set_content(_UNDELIVERED_NOTE + body, charset="utf-8", cte="8bit")
    # Thread it under the alert, so a phone shows one conversation and a reply to either
    # is recognised by the worker as the acknowledgement.
    message["In-Reply-To"] = state.alert.message_id
    message["References"] = state.alert.message_id
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
    why = "the alert was refused by the mail server; " if failover else ""
    add_event(
        session,
        ESCALATED_EVENT,
        case.id,
        f"{why}escalation {number} to {len(to)} recipient(s) ({state.escalations + 1} for "
        f"the alert of outbox {state.alert.id})",
        "service",
        now,
    )
    return row


def _notice_failures(
    svc: Service, session: Session, case: Case, state: AlertState, now: datetime, failover: bool
) -> None:
    """Log each refused alert or escalation once at ERROR, and record that it was seen.

    ``intake.send`` marks such a row ``failed`` and never retries it; this is where the
    on-call path learns of it. Case number and outbox row only: the addresses and the
    server's reply (which often quotes the address) are logged at DEBUG.
    """
    seen = {
        e.detail
        for e in session.exec(
            select(Event).where(Event.case_id == case.id, Event.kind == UNDELIVERED_EVENT)
        )
    }
    others = len(_others(svc, state))
    for row in state.failed_rows:
        detail = f"outbox {row.id}"
        if detail in seen:
            continue
        add_event(session, UNDELIVERED_EVENT, case.id, detail, "service", now)
        if row.kind == "alert" and not others:
            what = (
                "urgent alert refused by the mail server and no other on-call address is "
                "configured: nobody has been told; add [oncall] backup and check the "
                "on-call address"
            )
        elif row.kind == "alert" and failover:
            what = (
                "urgent alert refused by the mail server; escalated at once to the other "
                "on-call addresses"
            )
        elif row.kind == "alert":
            what = "urgent alert refused by the mail server"
        else:
            what = "escalation of an urgent alert refused by the mail server"
        log.error(
            what,
            extra={
                "case": case.number,
                "outbox": row.id,
                "kind": row.kind,
                "other_oncall": others,
            },
        )
        log.debug(
            "refused row detail",
            extra={"outbox": row.id, "recipients": row.recipients, "error": row.last_error},
        )


def _reach(policy: EscalationPolicy) -> timedelta:
    return policy.delay + policy.interval * (policy.cap + 1) + timedelta(days=1)


def escalate(svc: Service, now: datetime, policy: EscalationPolicy | None = None) -> int:
    """Queue every escalation that is due at ``now``; returns how many were queued.

    Also where a refused alert or escalation is first seen: it is logged at ERROR once,
    and a refused alert is escalated at once (see the module docstring)."""
    policy = policy or escalation_policy(svc.settings)
    queued = 0
    with session_scope(svc.engine) as session:
        case_ids = session.exec(
            select(Outbox.case_id)
            .where(
                Outbox.mailbox == svc.settings.mailbox.key,
                Outbox.kind == "alert",
                col(Outbox.case_id).is_not(None),
                # Only alerts that can still be due: the last escalation comes at most
                # delay + cap intervals after an alert, later only when an SMTP outage
                # held the previous one back (a day's margin covers that).
                # The per-minute job then costs the same after years of history.
                Outbox.created_at >= to_db(now - _reach(policy)),
            )
            .distinct()
        ).all()
        for case_id in case_ids:
            assert case_id is not None
            state = alert_state(session, case_id)
            if state is None:
                continue
            case = session.get(Case, case_id)
            if case is None:
                continue
            # A failover only when someone else can be told; otherwise the ordinary
            # schedule goes on (to the same addresses: the refusal may have been passing).
            failover = state.alert_failed and state.escalations == 0 and bool(_others(svc, state))
            due = case.status != "closed" and escalation_due(
                state.alert_at,
                state.acknowledged_at,
                state.escalations,
                utc(now),
                policy,
                state.last_escalated_at,
                pending=state.pending,
                alert_failed=failover,
            )
            if state.failed_rows:
                _notice_failures(svc, session, case, state, now, failover and due)
            if not due:
                continue
            _queue_escalation(svc, session, case, state, now, failover)
            queued += 1
            log.warning(
                "urgent alert not acknowledged; escalated",
                extra={"case": case.number, "escalation": state.escalations_total + 1},
            )
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
