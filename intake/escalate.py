"""Escalate: when nobody has answered an urgent alert, tell the backup people, again and again.

Contract. Input: the service and the time (``now``; only the scheduler reads the clock).
Output: escalation mails queued in the outbox (delivered later by ``intake.send``) and an
``Event`` per escalation. It never sends mail itself and never touches the resident.

When is an alert answered? When the case has an ``alert-acknowledged`` event at or after
the alert was queued: the worker records one when an on-call (or backup) address replies
to the alert or to an escalation (RFC 5322 In-Reply-To/References), and
``python service.py ack CASE`` records one with the staff member as actor.

Timing (configurable under ``[oncall]`` in the config, defaults in brackets):
``escalate_after_minutes`` [30] after the alert is queued the first escalation goes to
``oncall.to`` + ``oncall.backup``; then every ``escalate_every_minutes`` [30] another, up
to ``escalate_max`` [3] escalations per alert. The schedule is a pure function of the
alert time, the escalations already queued and ``now``; after an outage the overdue
escalations are spread one ``interval`` apart, not sent as a burst.

Also here: ``callback_due`` — when an urgent case must be called back — because the
alert, the ``show`` command and the report must all agree on it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from intake.businessdays import BusinessCalendar
from intake.compose import render_alert
from intake.errors import IntakeError
from intake.store import Case, Event, Outbox, record_event, session_scope, to_db

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

    On the schedule ``alert_at + delay + interval * n``, but never sooner than ``interval``
    after the previous escalation: after an outage the overdue ones are spread out.
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
) -> bool:
    """True when another escalation must be queued now for an alert queued at ``alert_at``.

    Not due once acknowledged (at or before ``now``), once ``policy.cap`` escalations
    were queued, or before ``alert_at + delay + interval * escalations_so_far``.
    """
    if acknowledged_at is not None and acknowledged_at <= now:
        return False
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


@dataclass(frozen=True)
class AlertState:
    """The latest alert of a case and what has happened to it since."""

    case_id: int
    alert: Outbox
    alert_at: datetime
    acknowledged_at: datetime | None
    escalations: int  # escalations queued since this alert
    escalations_total: int  # for the case, across alerts (numbers the dedupe keys)
    last_escalated_at: datetime | None


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
    last = max((utc(row.created_at) for row in since), default=None)
    return AlertState(
        case_id, latest, alert_at, min(acks) if acks else None, len(since), len(escalations), last
    )


def _recipients(settings: Settings) -> list[str]:
    seen: list[str] = []
    for address in (*settings.oncall.to, *settings.oncall.off_hours, *settings.oncall.backup):
        if address.lower() not in (s.lower() for s in seen):
            seen.append(address)
    return seen


def _queue_escalation(
    svc: Service, session: Session, case: Case, state: AlertState, now: datetime
) -> Outbox:
    # Lazy import: pipeline imports half the service; escalate's pure part must not need it.
    from intake.pipeline import alert_context, queue_mail

    number = state.escalations_total + 1
    to = _recipients(svc.settings)
    received = utc(case.created_at)
    message = render_alert(
        svc.env,
        sender=svc.sender,
        to=to,
        case=alert_context(svc, case, received, None),
        now=now,
        tz=svc.calendar.tz,
        escalation=number,
    )
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
    add_event(
        session,
        ESCALATED_EVENT,
        case.id,
        f"escalation {number} to {len(to)} recipient(s) ({state.escalations + 1} for "
        f"the alert of outbox {state.alert.id})",
        "service",
        now,
    )
    return row


def _reach(policy: EscalationPolicy) -> timedelta:
    return policy.delay + policy.interval * (policy.cap + 1) + timedelta(days=1)


def escalate(svc: Service, now: datetime, policy: EscalationPolicy | None = None) -> int:
    """Queue every escalation that is due at ``now``; returns how many were queued."""
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
                # delay + cap intervals after an alert (a day's margin covers an outage).
                # The per-minute job then costs the same after years of history.
                Outbox.created_at >= to_db(now - _reach(policy)),
            )
            .distinct()
        ).all()
        for case_id in case_ids:
            assert case_id is not None
            state = alert_state(session, case_id)
            if state is None or not escalation_due(
                state.alert_at,
                state.acknowledged_at,
                state.escalations,
                utc(now),
                policy,
                state.last_escalated_at,
            ):
                continue
            case = session.get(Case, case_id)
            if case is None or case.status == "closed":
                continue
            _queue_escalation(svc, session, case, state, now)
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
