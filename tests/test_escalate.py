"""Escalation timing, callback due times and acknowledgement, with a controllable clock.

The unit tests pass ``now`` in; the integration test runs the real path: an urgent mail
through Dovecot, the alert through aiosmtpd, an escalation to the backup, then the
on-call person's reply to the alert stops any further escalation.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from email import message_from_bytes
from email.header import decode_header, make_header
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select

from intake.businessdays import BusinessCalendar
from intake.config import load_settings
from intake.errors import ConfigError
from intake.escalate import (
    ACK_EVENT,
    CaseNotFound,
    EscalationPolicy,
    acknowledge_alert,
    callback_due,
    escalate,
    escalation_due,
    escalation_policy,
    next_escalation_at,
)
from intake.pipeline import Service
from intake.store import Case, Event, Outbox, session_scope
from tests.helpers import BACKUP, ONCALL, offline_service, settled, write_config

JST = ZoneInfo("Asia/Tokyo")
T0 = datetime(2026, 11, 26, 22, 0, tzinfo=JST)  # a Thursday night: on-call time
POLICY = EscalationPolicy()


def jst(*args: int) -> datetime:
    return datetime(*args, tzinfo=JST)  # type: ignore[misc]


# --- pure timing ------------------------------------------------------------------------


def test_no_escalation_before_the_delay() -> None:
    assert not escalation_due(T0, None, 0, T0 + timedelta(minutes=29, seconds=59))


def test_first_escalation_is_due_at_the_delay() -> None:
    assert escalation_due(T0, None, 0, T0 + timedelta(minutes=30))


def test_second_escalation_waits_one_interval_more() -> None:
    assert not escalation_due(T0, None, 1, T0 + timedelta(minutes=59))
    assert escalation_due(T0, None, 1, T0 + timedelta(minutes=60))


def test_acknowledged_alert_is_never_escalated() -> None:
    acked = T0 + timedelta(minutes=5)
    assert not escalation_due(T0, acked, 0, T0 + timedelta(hours=5))


def test_acknowledgement_recorded_in_the_future_does_not_count_yet() -> None:
    assert escalation_due(T0, T0 + timedelta(hours=2), 0, T0 + timedelta(minutes=31))


def test_escalation_stops_at_the_cap() -> None:
    policy = EscalationPolicy(cap=2)
    assert escalation_due(T0, None, 1, T0 + timedelta(hours=9), policy)
    assert not escalation_due(T0, None, 2, T0 + timedelta(hours=9), policy)
    assert next_escalation_at(T0, 2, policy) is None


def test_overdue_escalations_after_an_outage_are_spread_one_interval_apart() -> None:
    late = T0 + timedelta(hours=3)
    assert escalation_due(T0, None, 0, late)
    # The first went out at `late`; the second is not due a minute later, but an interval later.
    assert not escalation_due(T0, None, 1, late + timedelta(minutes=1), last_escalated_at=late)
    assert escalation_due(T0, None, 1, late + timedelta(minutes=30), last_escalated_at=late)


def test_custom_delay_and_interval_are_used() -> None:
    policy = EscalationPolicy(delay=timedelta(minutes=10), interval=timedelta(minutes=5), cap=5)
    assert next_escalation_at(T0, 0, policy) == T0 + timedelta(minutes=10)
    assert next_escalation_at(T0, 3, policy) == T0 + timedelta(minutes=25)


# --- callback due times ------------------------------------------------------------------

CAL = BusinessCalendar(close=time(17, 0))  # hours as in these expectations


@pytest.mark.parametrize(
    ("received", "expected", "why"),
    [
        (jst(2026, 11, 26, 10, 0), jst(2026, 11, 26, 17, 0), "office hours: same day closing"),
        (jst(2026, 11, 26, 7, 0), jst(2026, 11, 26, 8, 30), "before opening: that morning"),
        (jst(2026, 11, 27, 18, 0), jst(2026, 11, 30, 8, 30), "Friday 18:00: Monday morning"),
        (jst(2026, 12, 31, 10, 0), jst(2027, 1, 4, 8, 30), "year-end closure until 1/3"),
        (jst(2026, 12, 28, 16, 59), jst(2026, 12, 28, 17, 0), "last day before the closure"),
        (jst(2026, 12, 28, 17, 0), jst(2027, 1, 4, 8, 30), "closing time is off hours"),
        (jst(2026, 5, 2, 11, 0), jst(2026, 5, 7, 8, 30), "Golden Week Saturday"),
        (jst(2026, 5, 6, 9, 0), jst(2026, 5, 7, 8, 30), "substitute holiday 5/6"),
        (jst(2026, 4, 29, 12, 0), jst(2026, 4, 30, 8, 30), "Showa Day"),
        (jst(2026, 5, 1, 12, 0), jst(2026, 5, 1, 17, 0), "working Friday inside Golden Week"),
    ],
)
def test_callback_due(received: datetime, expected: datetime, why: str) -> None:
    assert callback_due(received, CAL) == expected, why


def test_callback_due_skips_a_city_closure_day_from_config() -> None:
    cal = BusinessCalendar(closures=(*CAL.closures, "2026-11-30"))
    assert callback_due(jst(2026, 11, 27, 18, 0), cal) == jst(2026, 12, 1, 8, 30)


def test_callback_due_given_in_utc_is_the_same_moment() -> None:
    received = jst(2026, 11, 27, 18, 0).astimezone(UTC)
    assert callback_due(received, CAL) == jst(2026, 11, 30, 8, 30)


# --- against a temporary database --------------------------------------------------------


def urgent_case(svc: Service, alert_at: datetime, n: int = 1) -> int:
    """An urgent case with a queued alert, written the way the pipeline writes them."""
    with session_scope(svc.engine) as session:
        case = Case(
            mailbox=svc.settings.mailbox.key,
            created_at=alert_at.astimezone(UTC),
            sender=f"resident{n}@example.jp",
            urgent=True,
            topic="isolation",
            status="new",
            urgent_reasons=json.dumps([{"surface": "死にたい", "rule": "u1"}]),
        )
        session.add(case)
        session.flush()
        session.add(
            Outbox(
                mailbox=svc.settings.mailbox.key,
                kind="alert",
                priority=0,
                dedupe_key=f"alert:message:{n}",
                case_id=case.id,
                recipients=json.dumps([ONCALL]),
                message_id=f"<alert{n}@example.jp>",
                content=b"x",
                created_at=alert_at.astimezone(UTC),
                next_attempt_at=alert_at.astimezone(UTC),
            )
        )
        assert case.id is not None
        return case.id


def escalation_rows(svc: Service) -> list[Outbox]:
    with Session(svc.engine) as session:
        return list(
            session.exec(select(Outbox).where(Outbox.kind == "escalation").order_by(Outbox.id))
        )  # type: ignore[arg-type]


@pytest.fixture
def svc(tmp_path: Path) -> Service:
    return offline_service(tmp_path)


def test_unacknowledged_alert_escalates_to_oncall_and_backup(svc: Service) -> None:
    case_id = urgent_case(svc, T0)
    mark_sent(svc, T0)  # the alert reached the server (one never sent is late at +3 min)
    assert escalate(svc, T0 + timedelta(minutes=29)) == 0
    assert escalate(svc, T0 + timedelta(minutes=31)) == 1
    [row] = escalation_rows(svc)
    assert row.dedupe_key == f"escalation:{case_id}:1"
    assert json.loads(row.recipients) == [ONCALL, BACKUP]
    mail = message_from_bytes(row.content)
    assert mail["In-Reply-To"] == "<alert1@example.jp>"
    subject = str(make_header(decode_header(mail["Subject"])))
    assert "再通知" in subject and "C000001" in subject
    body = mail.get_payload(decode=True).decode("utf-8")  # type: ignore[union-attr]
    assert "1回目" in body
    # callback due for a Thursday 22:00 case: as soon as possible, at the latest Friday's
    # opening (not a bare "deadline Friday 08:30" that reads as "it can wait").
    assert "折り返し期限: できるだけ早く（遅くとも 11月27日(金) 8時30分）" in body


def mark_sent(svc: Service, now: datetime) -> None:
    """What intake.send records once the server took every queued escalation."""
    with session_scope(svc.engine) as session:
        for row in session.exec(select(Outbox).where(Outbox.status == "queued")):
            row.status, row.sent_at = "sent", now.astimezone(UTC)


def test_escalation_repeats_at_intervals_up_to_the_cap(svc: Service) -> None:
    case_id = urgent_case(svc, T0)
    fired = []
    for m in range(0, 300, 5):
        fired.append(escalate(svc, T0 + timedelta(minutes=m)))
        mark_sent(svc, T0 + timedelta(minutes=m))  # delivered at once (see send.py)
    assert sum(fired) == 3
    keys = [r.dedupe_key for r in escalation_rows(svc)]
    assert keys == [f"escalation:{case_id}:{n}" for n in (1, 2, 3)]
    with Session(svc.engine) as session:
        events = session.exec(select(Event).where(Event.kind == "escalated")).all()
    assert [e.at.replace(tzinfo=UTC) if e.at.tzinfo is None else e.at for e in events] == [
        (T0 + timedelta(minutes=m)).astimezone(UTC) for m in (30, 60, 90)
    ]


def test_running_escalate_twice_at_the_same_moment_queues_once(svc: Service) -> None:
    urgent_case(svc, T0)
    assert escalate(svc, T0 + timedelta(minutes=45)) == 1
    assert escalate(svc, T0 + timedelta(minutes=45)) == 0


def test_ack_command_stops_escalation_and_records_the_actor(svc: Service) -> None:
    urgent_case(svc, T0)
    assert escalate(svc, T0 + timedelta(minutes=30)) == 1
    result = acknowledge_alert(svc, "C000001", "tanaka", T0 + timedelta(minutes=40))
    assert result.had_alert and not result.already
    assert escalate(svc, T0 + timedelta(hours=3)) == 0
    with Session(svc.engine) as session:
        ack = session.exec(select(Event).where(Event.kind == ACK_EVENT)).one()
    assert ack.actor == "tanaka"


def test_acknowledging_one_case_leaves_the_others_escalating(svc: Service) -> None:
    urgent_case(svc, T0, 1)
    urgent_case(svc, T0, 2)
    acknowledge_alert(svc, "2", "tanaka", T0 + timedelta(minutes=1))
    assert escalate(svc, T0 + timedelta(minutes=31)) == 1
    assert escalation_rows(svc)[0].dedupe_key == "escalation:1:1"


def test_a_new_alert_after_an_acknowledgement_escalates_again(svc: Service) -> None:
    case_id = urgent_case(svc, T0)
    acknowledge_alert(svc, "C000001", "tanaka", T0 + timedelta(minutes=5))
    later = T0 + timedelta(hours=5)
    with session_scope(svc.engine) as session:  # an urgent follow-up from the same resident
        session.add(
            Outbox(
                mailbox=svc.settings.mailbox.key,
                kind="alert",
                priority=0,
                dedupe_key="alert:message:99",
                case_id=case_id,
                recipients="[]",
                message_id="<alert99@example.jp>",
                content=b"x",
                created_at=later.astimezone(UTC),
                next_attempt_at=later.astimezone(UTC),
            )
        )
    assert escalate(svc, later + timedelta(minutes=31)) == 1


def test_closed_case_is_not_escalated(svc: Service) -> None:
    case_id = urgent_case(svc, T0)
    with session_scope(svc.engine) as session:
        case = session.get(Case, case_id)
        assert case is not None
        case.status = "closed"
    assert escalate(svc, T0 + timedelta(hours=1)) == 0


def test_ack_of_an_unknown_case_says_how_to_find_one(svc: Service) -> None:
    with pytest.raises(CaseNotFound, match=r"service\.py cases"):
        acknowledge_alert(svc, "C000404", "tanaka", T0)
    with pytest.raises(CaseNotFound, match="not a case number"):
        acknowledge_alert(svc, "yesterday's", "tanaka", T0)


def test_escalation_policy_is_read_from_the_config(tmp_path: Path) -> None:
    svc = offline_service(tmp_path, extra="escalate_after_minutes = 10\nescalate_max = 1\n")
    policy = escalation_policy(svc.settings)
    assert policy == EscalationPolicy(delay=timedelta(minutes=10), cap=1)
    urgent_case(svc, T0)
    assert escalate(svc, T0 + timedelta(minutes=11)) == 1
    assert escalate(svc, T0 + timedelta(hours=4)) == 0


def test_a_negative_escalation_delay_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"oncall\.escalate_after_minutes: .*>= 0"):
        offline_service(tmp_path, extra="escalate_after_minutes = -5\n")


def test_repeating_escalation_needs_an_interval(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="escalate_every_minutes"):
        offline_service(tmp_path, extra="escalate_every_minutes = 0\n")
    svc = offline_service(tmp_path, extra="escalate_every_minutes = 0\nescalate_max = 0\n")
    assert escalation_policy(svc.settings).cap == 0


# --- integration: Dovecot + SMTP ----------------------------------------------------------


@pytest.mark.integration
def test_oncall_reply_to_the_alert_stops_escalation_after_one_went_to_backup(
    tmp_path: Path,
    dovecot,
    smtp_server,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    from intake import samples
    from intake.fetch import Mailbox
    from intake.pipeline import process_new_mail
    from intake.send import deliver_outbox

    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    svc = Service.from_settings(load_settings(write_config(tmp_path, dovecot, smtp_server)))

    def once(now: datetime) -> None:
        with Mailbox(svc.settings.mailbox) as mailbox:
            process_new_mail(svc, mailbox, now)
        deliver_outbox(svc.settings.smtp, svc.engine, now)

    # The worker stamps some events with the wall clock, so the test's clock starts at it.
    base = datetime.now(JST)
    dovecot.append(samples.consultation("night@example.jp", "相談", "もう死にたいです。"))
    once(base)
    [alert] = [m for m in smtp_server.wait_for(2, timeout=10) if ONCALL in m.rcpt_tos]
    assert alert.rcpt_tos == [ONCALL]

    assert escalate(svc, base + timedelta(minutes=10)) == 0
    assert escalate(svc, base + timedelta(minutes=31)) == 1
    smtp_server.clear()
    deliver_outbox(svc.settings.smtp, svc.engine, base + timedelta(minutes=31))
    [escalation] = smtp_server.wait_for(1, timeout=10)
    assert sorted(escalation.rcpt_tos) == sorted([ONCALL, BACKUP])

    # The on-call person answers the alert from the phone.
    dovecot.append(
        samples.consultation(
            ONCALL, "Re: 至急", "対応します", in_reply_to=str(alert.message["Message-ID"])
        )
    )
    once(base + timedelta(minutes=40))
    with Session(svc.engine) as session:
        acks = session.exec(select(Event).where(Event.kind == ACK_EVENT)).all()
        cases = session.exec(select(Case)).all()
    assert [a.actor for a in acks] == [ONCALL]
    assert len(cases) == 1, "the on-call reply is not a new consultation"

    smtp_server.clear()
    assert escalate(svc, base + timedelta(hours=3)) == 0
    deliver_outbox(svc.settings.smtp, svc.engine, base + timedelta(hours=3))
    assert settled(smtp_server, 1.0) == []
    assert len(escalation_rows(svc)) == 1


def test_an_escalation_threads_under_an_alert_with_a_long_message_id(svc: Service) -> None:
    """Our alert's Message-ID is ~41 letters plus the sender's domain; from a 37-letter
    domain on, the escalation's In-Reply-To was written as an RFC 2047 encoded word (or
    folded inside the identifier), so the on-call person's phone did not thread it under
    the alert. It must go out whole, on one line."""
    long_id = "<20261126130000.12345.6789012345678901234@mail.soudan.city.example-town.okayama.jp>"
    urgent_case(svc, T0)
    with session_scope(svc.engine) as session:
        alert = session.exec(select(Outbox).where(Outbox.kind == "alert")).one()
        alert.message_id = long_id
    mark_sent(svc, T0)
    assert escalate(svc, T0 + timedelta(minutes=31)) == 1
    [row] = escalation_rows(svc)
    head = row.content.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("ascii") + "\n"
    assert f"\nIn-Reply-To: {long_id}\n" in head
    assert f"\nReferences: {long_id}\n" in head
    assert "=?" not in "".join(
        line for line in head.splitlines() if line.startswith(("In-Reply-To", "References"))
    )
