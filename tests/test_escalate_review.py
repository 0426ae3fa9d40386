"""Regression tests for the escalation path found by review 5 (findings 4, 6 and 13) and
by review 2 of the rewrite (findings 4, 5, 9, 10, 11/12: the tests after the first round's).

Each test runs the real path where it matters: the alert is written by the pipeline's own
``_queue_alert`` (or ``quarantine``), delivered by ``intake.send`` to a real aiosmtpd
server on 127.0.0.1, and time is simulated the way the worker's jobs run: ``escalate``
then ``deliver_outbox`` at a controllable ``now``. Each failed on the code before the fix.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.header import decode_header, make_header
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select

from intake.config import load_settings
from intake.escalate import FAILOVER_SUBJECT, acknowledge_alert, escalate, escalation_due
from intake.localservers import LocalSMTP, ReceivedMail, serve_smtp
from intake.pipeline import Service, quarantine
from intake.send import deliver_outbox
from intake.store import Event, Outbox, StoredMessage, session_scope, to_db
from tests.helpers import BACKUP, ONCALL, serving, urgent_case, write_config

ROOT = Path(__file__).resolve().parents[1]
JST = ZoneInfo("Asia/Tokyo")
NOON = datetime(2026, 11, 26, 12, 0, tzinfo=JST)  # a Thursday, office open
NIGHT = datetime(2026, 11, 26, 22, 0, tzinfo=JST)  # the same Thursday, office shut
NIGHT_DUTY = "night@example.jp"


def config(tmp_path: Path, smtp: Any, extra: str = "", *, backup: bool = True) -> Path:
    """A config file for the given SMTP server (IMAP is never contacted)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    imap = SimpleNamespace(host="127.0.0.1", port=1, user="intake")
    path = write_config(tmp_path, imap, smtp, extra=extra)  # type: ignore[arg-type]
    if not backup:
        text = path.read_text(encoding="utf-8").replace(f'backup = ["{BACKUP}"]', "")
        path.write_text(text, encoding="utf-8")
    return path


def make_svc(tmp_path: Path, smtp: Any, extra: str = "", *, backup: bool = True) -> Service:
    """A Service on the given SMTP server (IMAP is never contacted)."""
    return Service.from_settings(load_settings(config(tmp_path, smtp, extra, backup=backup)))


def run_jobs(svc: Service, start: datetime, end: datetime, step: timedelta) -> None:
    """The worker's escalate and outbox jobs, at simulated times from start to end."""
    t = start
    while t <= end:
        escalate(svc, t)
        deliver_outbox(svc.settings.smtp, svc.engine, t, svc.settings.mailbox.key)
        t += step


def outbox(svc: Service, kind: str | None = None) -> list[Outbox]:
    with Session(svc.engine) as s:
        query = select(Outbox).order_by(Outbox.id)  # type: ignore[arg-type]
        if kind:
            query = query.where(Outbox.kind == kind)
        return list(s.exec(query).all())


def subject(mail: ReceivedMail) -> str:
    return str(make_header(decode_header(str(mail.message["Subject"]))))


def is_escalation(subject: str) -> bool:
    """A reminder (再通知) or a failover (its readers' first notice: no 再通知)."""
    return "再通知" in subject or subject.startswith(FAILOVER_SUBJECT)


def body(mail: ReceivedMail) -> str:
    part = mail.message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def no_address_above_debug(records: list[logging.LogRecord]) -> None:
    """No log record at INFO or above carries a mail address, in its text or its extras."""
    standard = set(vars(logging.LogRecord("x", 0, "", 0, "", None, None)))
    for record in records:
        if record.levelno < logging.INFO or not record.name.startswith("intake"):
            continue
        extras = {k: v for k, v in vars(record).items() if k not in standard}
        text = record.getMessage() + " " + repr(extras)
        assert "@" not in text, f"address logged at {record.levelname}: {text}"


class _RefuseRcpt:
    """aiosmtpd handler: 550 for some recipients at RCPT, records what it accepts."""

    def __init__(self, refused: set[str]) -> None:
        self.refused = refused
        self.received: list[ReceivedMail] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.refused:
            return "550 5.1.1 <" + address + ">: user unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import email
        import email.policy

        data = envelope.original_content or envelope.content or b""
        message = email.message_from_bytes(data, policy=email.policy.default)
        self.received.append(
            ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), data, message)  # type: ignore[arg-type]
        )
        return "250 OK"


@pytest.fixture
def oncall_refused() -> Iterator[tuple[SimpleNamespace, _RefuseRcpt]]:
    """A real SMTP server on which the on-call address no longer exists (RCPT 550)."""
    handler = _RefuseRcpt({ONCALL})
    with serving(handler) as smtp:
        yield smtp, handler


# --- finding 4: a refused alert --------------------------------------------------------


@pytest.mark.integration
def test_refused_alert_goes_to_backup_and_night_duty_at_once(
    tmp_path: Path,
    oncall_refused: tuple[SimpleNamespace, _RefuseRcpt],
    caplog: pytest.LogCaptureFixture,
) -> None:
    smtp, server = oncall_refused
    svc = make_svc(tmp_path, smtp, extra=f'off_hours = ["{NIGHT_DUTY}"]')
    caplog.set_level(logging.DEBUG)
    urgent_case(svc, NOON)  # office hours: the alert goes to ONCALL only, and is refused

    run_jobs(svc, NOON, NOON + timedelta(minutes=5), timedelta(seconds=30))

    [alert] = outbox(svc, "alert")
    assert alert.status == "failed"
    [failover] = server.received  # well before the 30 minutes of the ordinary schedule
    assert sorted(failover.rcpt_tos) == sorted([BACKUP, NIGHT_DUTY])
    # Its readers never got a first notice: not 再通知, and says what it is.
    assert subject(failover).startswith(
        "【至急】当番への通知が届いていない相談 C000001 確認コード "
    )
    assert "再通知" not in subject(failover) and "緊急" not in subject(failover)
    assert "送信できませんでした" in body(failover) or "届きませんでした" in body(failover)
    # Review 2, finding 5: the failover names the case, not what the resident wrote.
    assert "090-1234-5678" not in body(failover)
    assert "service.py show C000001" in body(failover)
    [row] = outbox(svc, "escalation")
    assert row.status == "sent" and row.sent_at is not None
    assert row.sent_at - alert.claimed_at <= timedelta(minutes=1)  # type: ignore[operator]

    errors = [r for r in caplog.records if r.name == "intake.escalate" and r.levelno >= 40]
    assert len(errors) == 1
    assert errors[0].case == "C000001" and errors[0].outbox == alert.id  # type: ignore[attr-defined]
    no_address_above_debug(caplog.records)


@pytest.mark.integration
def test_refused_alert_without_backup_is_an_error_once_per_row(
    tmp_path: Path,
    oncall_refused: tuple[SimpleNamespace, _RefuseRcpt],
    caplog: pytest.LogCaptureFixture,
) -> None:
    smtp, server = oncall_refused
    svc = make_svc(tmp_path, smtp, backup=False)
    caplog.set_level(logging.INFO)
    case_id = urgent_case(svc, NOON)

    run_jobs(svc, NOON, NOON + timedelta(hours=2), timedelta(minutes=1))

    assert server.received == []  # there is truly nobody else to tell
    rows = outbox(svc)
    assert [(r.kind, r.status) for r in rows] == [("alert", "failed")] + [
        ("escalation", "failed")
    ] * 3, "the ordinary schedule still tries, up to the cap"
    errors = [r for r in caplog.records if r.name == "intake.escalate" and r.levelno >= 40]
    # One ERROR per refused row (not one a minute), each naming the case and the row.
    assert sorted(r.outbox for r in errors) == [r.id for r in rows]  # type: ignore[attr-defined]
    assert {r.case for r in errors} == {"C000001"}  # type: ignore[attr-defined]
    [first] = [r for r in errors if r.outbox == rows[0].id]  # type: ignore[attr-defined]
    assert "nobody has been told" in first.getMessage()
    assert "backup" in first.getMessage()
    from intake.escalate import UNDELIVERED_EVENT  # new with the fix

    with Session(svc.engine) as s:
        seen = s.exec(
            select(Event).where(Event.case_id == case_id, Event.kind == UNDELIVERED_EVENT)
        ).all()
    assert sorted(e.detail for e in seen) == sorted(f"outbox {r.id}" for r in rows)
    no_address_above_debug(caplog.records)


def test_an_oncall_section_without_backup_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    smtp = SimpleNamespace(host="127.0.0.1", port=1)
    caplog.set_level(logging.WARNING, logger="intake.config")
    load_settings(config(tmp_path / "with", smtp))
    assert caplog.records == []
    # The same address as `to` is no backup either.
    path = config(tmp_path / "same", smtp)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(f'"{BACKUP}"', f'"{ONCALL.upper()}"'), encoding="utf-8")
    load_settings(path)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "oncall.backup" in caplog.records[0].getMessage()

    # What the contractor sees: `check` says so, but does not refuse (see intake.config).
    path = config(tmp_path / "none", smtp, backup=False)
    result = subprocess.run(
        [sys.executable, "service.py", "check", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "oncall.backup: no backup address" in result.stderr
    assert "nobody is told" in result.stderr


# --- finding 6: escalations during an SMTP outage ---------------------------------------


@pytest.mark.integration
def test_smtp_outage_does_not_spend_the_escalations_before_anyone_has_them(
    tmp_path: Path, smtp_server: LocalSMTP
) -> None:
    svc = make_svc(tmp_path, smtp_server)
    smtp_server.stop()
    urgent_case(svc, NIGHT)
    back_at = NIGHT + timedelta(minutes=65)
    arrivals: list[tuple[datetime, str]] = []
    queued_in_outage = 0
    t = NIGHT
    while t <= NIGHT + timedelta(hours=3):
        if t >= back_at and not smtp_server.running:
            queued_in_outage = len(outbox(svc, "escalation"))
            smtp_server.start()
        escalate(svc, t)
        deliver_outbox(svc.settings.smtp, svc.engine, t, svc.settings.mailbox.key)
        arrivals += [(t, subject(m)) for m in smtp_server.messages[len(arrivals) :]]
        t += timedelta(seconds=30)

    assert queued_in_outage == 1, "one escalation waits for SMTP; no more pile up behind it"
    escalations = [at for at, subj in arrivals if is_escalation(subj)]
    # The late alert's notice to the others, then the three reminders (review 6a F3: the
    # notice is a failover, not one of the reminders ``escalate_max`` counts).
    assert len(escalations) == 1 + 3, "after recovery the schedule goes on to the cap"
    assert sum(subj.startswith(FAILOVER_SUBJECT) for _, subj in arrivals) == 1, arrivals
    gaps = [b - a for a, b in itertools.pairwise(escalations)]
    assert all(gap >= timedelta(minutes=30) for gap in gaps), gaps
    [first] = [subj for _, subj in arrivals if not is_escalation(subj)]
    assert first.startswith("【至急】緊急の可能性がある相談 C000001 確認コード ")


def test_no_escalation_is_due_while_the_previous_one_is_undelivered() -> None:
    late = NIGHT + timedelta(hours=2)
    assert escalation_due(NIGHT, None, 0, late)
    assert not escalation_due(NIGHT, None, 0, late, pending=True)
    assert not escalation_due(NIGHT, None, 1, late, pending=True)


def test_a_refused_alert_is_due_at_once_even_with_escalation_switched_off() -> None:
    from intake.escalate import EscalationPolicy

    off = EscalationPolicy(cap=0)
    assert escalation_due(NIGHT, None, 0, NIGHT, off, alert_failed=True)
    assert not escalation_due(NIGHT, None, 1, NIGHT + timedelta(hours=1), off, alert_failed=True)
    acked = NIGHT + timedelta(seconds=1)
    assert not escalation_due(NIGHT, acked, 0, acked, off, alert_failed=True)


# --- finding 13: what an escalation says and to whom ------------------------------------


@pytest.mark.integration
def test_escalation_of_a_quarantined_mail_still_says_to_check_the_original(
    tmp_path: Path, smtp_server: LocalSMTP
) -> None:
    svc = make_svc(tmp_path, smtp_server)
    with session_scope(svc.engine) as s:
        msg = StoredMessage(
            mailbox=svc.settings.mailbox.key,
            sha256=uuid.uuid4().hex,
            raw=b"From: resident@example.jp\r\nSubject: x\r\n\r\n\x00broken",
            received_at=to_db(NIGHT),
            status="received",
        )
        s.add(msg)
        s.flush()
        quarantine(svc, s, msg, "parse", "ValueError", NIGHT)
    run_jobs(svc, NIGHT, NIGHT + timedelta(minutes=31), timedelta(minutes=1))

    mails = smtp_server.wait_for(3)
    [alert] = [m for m in mails if subject(m).startswith("【至急】")]
    [escalation] = [m for m in mails if "再通知" in subject(m)]
    hint = "service.py show C000001"
    assert hint in body(alert)
    assert hint in body(escalation)


@pytest.mark.integration
def test_night_duty_gets_escalations_only_outside_office_hours(
    tmp_path: Path, smtp_server: LocalSMTP
) -> None:
    svc = make_svc(tmp_path, smtp_server, extra=f'off_hours = ["{NIGHT_DUTY}"]')
    urgent_case(svc, datetime(2026, 11, 26, 10, 0, tzinfo=JST))
    run_jobs(
        svc,
        datetime(2026, 11, 26, 10, 0, tzinfo=JST),
        datetime(2026, 11, 26, 10, 31, tzinfo=JST),
        timedelta(minutes=1),
    )
    [alert, escalation] = smtp_server.wait_for(2)
    assert alert.rcpt_tos == [ONCALL]
    assert escalation.rcpt_tos == [ONCALL, BACKUP], "night duty is off shift at 10:30"

    # Alerted at 16:10 (open), escalated at 16:40 (shut at 16:30): night duty is on.
    acknowledge_alert(svc, "C000001", "tanaka", datetime(2026, 11, 26, 10, 40, tzinfo=JST))
    smtp_server.clear()
    urgent_case(svc, datetime(2026, 11, 26, 16, 10, tzinfo=JST))
    run_jobs(
        svc,
        datetime(2026, 11, 26, 16, 10, tzinfo=JST),
        datetime(2026, 11, 26, 16, 41, tzinfo=JST),
        timedelta(minutes=1),
    )
    [alert, escalation] = smtp_server.wait_for(2)
    assert alert.rcpt_tos == [ONCALL]
    assert escalation.rcpt_tos == [ONCALL, NIGHT_DUTY, BACKUP]


# === review 2 of the rewrite ==============================================================


class _Filter:
    """aiosmtpd handler: a content filter or mailbox trouble, as the test switches it on.

    ``data_reply``: the reply to the end of DATA for any mail quoting the resident's words
    (what amavisd-new does to spam); ``rcpt_reply``: per-address replies at RCPT."""

    def __init__(self) -> None:
        self.data_reply: str | None = None
        self.rcpt_reply: dict[str, str] = {}
        self.received: list[ReceivedMail] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.rcpt_reply:
            return self.rcpt_reply[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import email
        import email.policy

        data = envelope.original_content or envelope.content or b""
        message = email.message_from_bytes(data, policy=email.policy.default)
        mail = ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), data, message)  # type: ignore[arg-type]
        if self.data_reply and ("消えたい" in body(mail) or "090-1234-5678" in body(mail)):
            return self.data_reply
        self.received.append(mail)
        return "250 OK queued"


@pytest.fixture
def filtered() -> Iterator[tuple[SimpleNamespace, _Filter]]:
    """A real SMTP server whose refusals the test chooses (see ``_Filter``)."""
    handler = _Filter()
    with serving(handler) as smtp:
        yield smtp, handler


def errors_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "intake.escalate" and r.levelno >= 40]


# --- finding 4: an alert the relay accepted comes back as a bounce -------------------------


@pytest.mark.integration
def test_bounced_alert_is_escalated_at_once_and_logged_once(
    tmp_path: Path,
    dovecot: Any,
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from intake import samples
    from intake.fetch import Mailbox
    from intake.pipeline import process_new_mail

    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    # escalate_max = 0: before the fix nobody was ever told of a bounced alert.
    path = write_config(tmp_path, dovecot, smtp_server, extra="escalate_max = 0")
    svc = Service.from_settings(load_settings(path))
    caplog.set_level(logging.DEBUG)
    urgent_case(svc, NOON)
    deliver_outbox(svc.settings.smtp, svc.engine, NOON, svc.settings.mailbox.key)
    [alert] = outbox(svc, "alert")
    assert alert.status == "sent"
    smtp_server.wait_for(1)
    smtp_server.clear()
    # The city's relay took it; the on-call mailbox is gone, so a DSN comes back.
    dovecot.append(samples.bounce(ONCALL, alert.message_id))
    with Mailbox(svc.settings.mailbox) as mailbox:
        process_new_mail(svc, mailbox, NOON + timedelta(minutes=1))

    run_jobs(svc, NOON + timedelta(minutes=1), NOON + timedelta(hours=2), timedelta(minutes=1))

    [row] = outbox(svc, "escalation")
    assert row.status == "sent"
    assert row.sent_at is not None and row.sent_at <= to_db(NOON + timedelta(minutes=2))
    [failover] = smtp_server.wait_for(1)
    assert failover.rcpt_tos == [BACKUP]
    assert "C000001" in subject(failover)
    assert "消えたい" not in body(failover) and "090-1234-5678" not in body(failover)
    [error] = errors_of(caplog)
    assert error.case == "C000001" and error.outbox == alert.id  # type: ignore[attr-defined]
    assert "bounced" in error.getMessage()
    no_address_above_debug(caplog.records)


# --- finding 5: a content filter refuses the alert -----------------------------------------


@pytest.mark.integration
def test_failover_of_an_alert_a_content_filter_refused_carries_no_resident_words(
    tmp_path: Path,
    filtered: tuple[SimpleNamespace, _Filter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    smtp, server = filtered
    server.data_reply = "554 5.7.1 Message rejected as spam"
    svc = make_svc(tmp_path, smtp)
    caplog.set_level(logging.DEBUG)
    urgent_case(svc, NOON)

    run_jobs(svc, NOON, NOON + timedelta(hours=3), timedelta(minutes=1))

    [alert] = outbox(svc, "alert")
    assert alert.status == "failed"
    escalations = outbox(svc, "escalation")
    # The failover, then the three reminders (a failover is not one of them: review 6a F3).
    assert [r.status for r in escalations] == ["sent"] * 4, "each one gets past the filter"
    first = server.received[0]
    # The on-call person too: the filter refused the words, not the address.
    assert sorted(first.rcpt_tos) == sorted([ONCALL, BACKUP])
    for mail in server.received:
        text = body(mail) + subject(mail)
        assert "C000001" in text and "service.py show C000001" in text
        for word in ("消えたい", "090-1234-5678", "resident@example.jp", "緊急"):
            assert word not in text, word
    assert "受信日時: 11月26日(木) 12:00" in body(first)  # when the mail came in
    assert "送信できませんでした" in body(first) or "届きませんでした" in body(first)
    assert len(errors_of(caplog)) == 1
    no_address_above_debug(caplog.records)


# --- finding 9: escalation after an SMTP outage of more than a day -------------------------


@pytest.mark.integration
def test_escalation_goes_on_to_the_cap_after_an_outage_longer_than_a_day(
    tmp_path: Path, smtp_server: LocalSMTP
) -> None:
    svc = make_svc(tmp_path, smtp_server)
    smtp_server.stop()
    urgent_case(svc, NOON)
    back = NOON + timedelta(hours=27)
    run_jobs(svc, NOON, back - timedelta(minutes=5), timedelta(minutes=5))
    smtp_server.start()
    run_jobs(svc, back, back + timedelta(hours=4), timedelta(minutes=1))

    escalations = outbox(svc, "escalation")
    # The late alert's notice to the others, then the three reminders, as after a shorter
    # outage (review 6a F3). This test asserted 3 before review rvt F1: ``_candidates``
    # counted the notice toward the cap, and after an outage of over a day the case was
    # dropped one reminder short while ``alert_state`` still owed it.
    assert [r.status for r in escalations] == ["sent"] * (1 + 3)
    assert len([m for m in smtp_server.messages if is_escalation(subject(m))]) == 1 + 3
    # An acknowledged alert, a closed case or one at the cap is no longer looked at.
    from intake.escalate import _candidates, escalation_policy

    with Session(svc.engine) as s:
        later = back + timedelta(days=30)
        assert (
            _candidates(s, svc.settings.mailbox.key, later, escalation_policy(svc.settings)) == []
        )


@pytest.mark.integration
def test_the_only_reminder_is_sent_after_an_outage_longer_than_a_day_with_a_cap_of_one(
    tmp_path: Path, smtp_server: LocalSMTP
) -> None:
    """escalate_max = 1, SMTP down for 27 h (review rvt F1). At recovery the late alert's
    notice goes to the others; the one reminder is still owed (``alert_state`` counts no
    failover), so the case stays a candidate however long the worker is away after that,
    and the reminder follows. Before, ``_candidates`` counted the notice: ``1 < 1`` was
    false for an alert of over a day, and the on-call person was never reminded."""
    from intake.escalate import _candidates, alert_state, escalation_policy

    svc = make_svc(tmp_path, smtp_server, "escalate_max = 1")
    policy = escalation_policy(svc.settings)
    key = svc.settings.mailbox.key
    smtp_server.stop()
    case_id = urgent_case(svc, NOON)
    back = NOON + timedelta(hours=27)
    run_jobs(svc, NOON, back - timedelta(minutes=5), timedelta(minutes=5))
    smtp_server.start()
    run_jobs(svc, back, back + timedelta(minutes=5), timedelta(minutes=1))
    assert [r.status for r in outbox(svc, "escalation")] == ["sent"], "the notice, at once"
    # The worker is then away for three days: the reminder is owed all the same.
    away = back + timedelta(days=3)
    with Session(svc.engine) as s:
        state = alert_state(s, case_id, away)
        assert state is not None and state.escalations == 0
        assert _candidates(s, key, away, policy) == [case_id]
    run_jobs(svc, away, away + timedelta(hours=1), timedelta(minutes=1))

    assert [r.status for r in outbox(svc, "escalation")] == ["sent", "sent"]
    assert len([m for m in smtp_server.messages if is_escalation(subject(m))]) == 1 + 1
    with Session(svc.engine) as s:
        assert _candidates(s, key, away + timedelta(days=30), policy) == []


def test_an_unacknowledged_alert_with_escalations_left_stays_a_candidate_for_ever(
    tmp_path: Path,
) -> None:
    from intake.escalate import _candidates, escalation_policy

    svc = make_svc(tmp_path, SimpleNamespace(host="127.0.0.1", port=1))
    case_id = urgent_case(svc, NOON)
    policy = escalation_policy(svc.settings)
    key = svc.settings.mailbox.key
    with Session(svc.engine) as s:
        assert _candidates(s, key, NOON + timedelta(days=40), policy) == [case_id]
    acknowledge_alert(svc, "C000001", "tanaka", NOON + timedelta(days=2))
    with Session(svc.engine) as s:
        assert _candidates(s, key, NOON + timedelta(days=40), policy) == []


# --- finding 10: night duty's copy of the alert fails, on-call's went through -------------


@pytest.mark.integration
def test_failed_alert_retry_is_escalated_to_the_remaining_addresses(
    tmp_path: Path,
    filtered: tuple[SimpleNamespace, _Filter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    smtp, server = filtered
    server.rcpt_reply[NIGHT_DUTY] = "452 4.2.2 Mailbox full"
    svc = make_svc(tmp_path, smtp, extra=f'off_hours = ["{NIGHT_DUTY}"]')
    caplog.set_level(logging.DEBUG)
    urgent_case(svc, NIGHT)

    run_jobs(svc, NIGHT, NIGHT + timedelta(minutes=25), timedelta(minutes=1))

    [retry] = outbox(svc, "alert-retry")
    assert retry.status == "failed"
    assert server.received[0].rcpt_tos == [ONCALL]
    # Before the ordinary first escalation at +30 min, the backup hears that night duty
    # (the person on shift) was not told.
    [row] = outbox(svc, "escalation")
    assert row.status == "sent" and json.loads(row.recipients) == [BACKUP]
    [failover] = [m for m in server.received if m.rcpt_tos == [BACKUP]]
    assert "一部の宛先" in body(failover)
    [error] = errors_of(caplog)
    assert error.kind == "alert-retry" and error.case == "C000001"  # type: ignore[attr-defined]
    assert "nobody" not in error.getMessage() and "the others have it" in error.getMessage()
    no_address_above_debug(caplog.records)


# --- findings 11/12: one ERROR per refused row, also with two workers ---------------------


def _database(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> str | None:
    """None for the tests' SQLite file, or the URL of a fresh PostgreSQL database."""
    if kind == "sqlite":
        return None
    import os
    import time

    server = request.getfixturevalue("postgres")
    name = f"esc{os.getpid()}_{time.monotonic_ns()}"
    url: str = server.new_database(name)
    request.addfinalizer(lambda: server.drop_database(name))
    return url


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_workers_escalating_at_once_log_a_refused_alert_once(
    tmp_path: Path,
    oncall_refused: tuple[SimpleNamespace, _RefuseRcpt],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    kind: str,
) -> None:
    import threading

    import intake.escalate as escalate_module

    smtp, _ = oncall_refused
    path = config(tmp_path, smtp)
    url = _database(request, tmp_path, kind)
    if url is not None:
        text = path.read_text(encoding="utf-8")
        sqlite_url = f"sqlite:///{(tmp_path / 'intake.db').as_posix()}"
        assert sqlite_url in text
        path.write_text(text.replace(sqlite_url, url), encoding="utf-8")
    svc = Service.from_settings(load_settings(path))
    other = Service.from_settings(load_settings(path))  # a second worker: its own engine
    for service in (svc, other):  # before the database is dropped (finalisers run LIFO)
        request.addfinalizer(service.engine.dispose)
    urgent_case(svc, NOON)
    deliver_outbox(svc.settings.smtp, svc.engine, NOON, svc.settings.mailbox.key)
    assert outbox(svc, "alert")[0].status == "failed"

    # Both passes read the case at the same moment, as two workers' minute jobs can.
    meet = threading.Barrier(2, timeout=2)
    real = escalate_module.alert_state

    def alert_state_together(session: Any, case_id: int, now: Any = None) -> Any:
        # A broken barrier: the other pass waits for ours to finish, nobody to meet.
        with contextlib.suppress(threading.BrokenBarrierError):
            meet.wait()
        return real(session, case_id, now)

    monkeypatch.setattr(escalate_module, "alert_state", alert_state_together)
    caplog.set_level(logging.INFO)
    raised: list[BaseException] = []

    def worker(service: Service) -> None:
        try:
            escalate(service, NOON + timedelta(minutes=1))
        except BaseException as exc:
            raised.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in (svc, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert raised == [], "neither pass is rolled back"
    assert len(outbox(svc, "escalation")) == 1
    assert len(errors_of(caplog)) == 1


# --- review 3, finding 3: escalate_max = 0 and an outage longer than a day ---------------


@pytest.mark.integration
def test_refused_alert_is_failed_over_with_escalation_off_after_an_outage_of_over_a_day(
    tmp_path: Path, held_port: socket.socket
) -> None:
    """The README promises a refused alert's failover "even with escalate_max = 0". After a
    27 h outage the alert was older than the recent window and ``done < cap`` is ``0 < 0``:
    the case was no longer looked at, and the backup never heard of it."""
    handler = _RefuseRcpt({ONCALL})
    port = held_port.getsockname()[1]  # refuses connections until served
    svc = make_svc(tmp_path, SimpleNamespace(host="127.0.0.1", port=port), "escalate_max = 0")
    urgent_case(svc, NOON)
    back = NOON + timedelta(hours=27)
    run_jobs(svc, NOON, back - timedelta(minutes=30), timedelta(minutes=30))  # SMTP down
    controller = serve_smtp(handler, held_port)
    try:
        run_jobs(svc, back, back + timedelta(minutes=10), timedelta(minutes=1))
    finally:
        controller.stop()

    assert outbox(svc, "alert")[0].status == "failed"
    [row] = outbox(svc, "escalation")
    assert row.status == "sent"
    assert [m.rcpt_tos for m in handler.received] == [[BACKUP]]  # on-call's address is gone


# --- review 3, finding 4: the alert is refused after an outage, behind an escalation ------


@pytest.mark.integration
def test_alert_refused_after_an_outage_is_failed_over_once_when_it_was_late(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, held_port: socket.socket
) -> None:
    """SMTP is down from noon to 12:40. Before review 5, escalation 1 was queued at 12:30
    quoting the resident, as the alert does; at 12:40 the relay's content filter refused
    both, and the pending escalation had blocked the failover (review 3, finding 4). Now
    the alert is late at 12:03: its content-free notice to the backup is queued then, no
    quoting escalation is queued behind it, it passes the filter at 12:40, and the alert's
    refusal is logged without a second notice (the backup already knows)."""
    server = _Filter()
    server.data_reply = "554 5.7.1 Message rejected as spam"
    port = held_port.getsockname()[1]  # refuses connections until served
    svc = make_svc(tmp_path, SimpleNamespace(host="127.0.0.1", port=port))
    caplog.set_level(logging.DEBUG)
    urgent_case(svc, NOON)
    run_jobs(svc, NOON, NOON + timedelta(minutes=39), timedelta(minutes=1))  # SMTP down
    [queued] = outbox(svc, "escalation")
    assert queued.status == "queued" and queued.created_at <= to_db(NOON + timedelta(minutes=4))
    controller = serve_smtp(server, held_port)
    arrivals: list[datetime] = []
    try:
        t = NOON + timedelta(minutes=40)
        while t <= NOON + timedelta(minutes=50):
            escalate(svc, t)
            deliver_outbox(svc.settings.smtp, svc.engine, t, svc.settings.mailbox.key)
            arrivals += [t] * (len(server.received) - len(arrivals))
            t += timedelta(minutes=1)
    finally:
        controller.stop()

    [alert] = outbox(svc, "alert")
    assert alert.status == "failed"
    # The notice, and an interval after it was delivered the first reminder, which would
    # be due at 12:30: not one minute behind the notice (review 6a F3).
    [notice] = outbox(svc, "escalation")
    assert notice.status == "sent"
    assert arrivals and arrivals[0] <= NOON + timedelta(minutes=42)
    mail = server.received[0]
    assert mail.rcpt_tos == [BACKUP]
    assert "消えたい" not in body(mail) and "まだ送信できていません" in body(mail)
    assert len(server.received) == 1, "one failover, not one per refused row"
    # One ERROR when it was late (12:03), one when it was refused (12:41).
    assert [r.outbox for r in errors_of(caplog)] == [alert.id, alert.id]  # type: ignore[attr-defined]
    no_address_above_debug(caplog.records)


def test_a_failover_is_due_at_once_even_behind_a_pending_or_refused_escalation() -> None:
    from intake.escalate import EscalationPolicy

    off = EscalationPolicy(cap=0)
    assert escalation_due(NIGHT, None, 1, NIGHT, pending=True, failover=True)
    assert escalation_due(NIGHT, None, 3, NIGHT, off, failover=True)
    acked = NIGHT + timedelta(seconds=1)
    assert not escalation_due(NIGHT, acked, 1, acked, pending=True, failover=True)


# --- review 3, finding 9: an escalation's follow-up to a 4xx recipient fails ------------


@pytest.mark.integration
def test_a_failed_escalation_retry_is_logged_once_by_escalation(
    tmp_path: Path,
    filtered: tuple[SimpleNamespace, _Filter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The backup's mailbox is full: the first escalation reaches on-call, its follow-up
    to the backup fails 15 min later. Before, escalation never looked at that row: no
    ``alert-undelivered`` event and no ERROR of its own; only send's generic one."""
    smtp, server = filtered
    server.rcpt_reply[BACKUP] = "452 4.2.2 Mailbox full"
    svc = make_svc(tmp_path, smtp)
    caplog.set_level(logging.DEBUG)
    case_id = urgent_case(svc, NOON)

    run_jobs(svc, NOON, NOON + timedelta(minutes=62), timedelta(minutes=1))

    retry, _ = outbox(svc, "escalation-retry")  # the second escalation's is still queued
    assert retry.status == "failed"
    with Session(svc.engine) as s:
        noticed = s.exec(
            select(Event).where(Event.case_id == case_id, Event.kind == "alert-undelivered")
        ).all()
    assert [e.detail for e in noticed] == [f"outbox {retry.id}"]
    [error] = errors_of(caplog)
    assert error.kind == "escalation-retry"  # type: ignore[attr-defined]
    assert "some of its recipients" in error.getMessage()
    # No failover (the alert reached on-call) and the next escalation still says what
    # the case is about: the backup's full mailbox refused no words.
    later = [r for r in outbox(svc, "escalation") if r.status == "sent"]
    assert len(later) == 2
    assert "消えたい" in body(server.received[-1])
    no_address_above_debug(caplog.records)


# === review 5 (fourth round) ================================================================


def _first_to(
    svc: Service, server: _Filter, address: str, start: datetime, count: int
) -> int | None:
    """The worker's escalate and outbox jobs once a minute for ``count`` minutes; the
    minute (offset) at which ``address`` first received anything, or None."""
    first = None
    t = start
    for minute in range(count):
        escalate(svc, t)
        deliver_outbox(svc.settings.smtp, svc.engine, t, svc.settings.mailbox.key)
        if first is None and any(address in m.rcpt_tos for m in server.received):
            first = minute
        t += timedelta(minutes=1)
    return first


def _late_events(svc: Service) -> list[Event]:
    from intake.escalate import LATE_EVENT

    with Session(svc.engine) as s:
        return list(s.exec(select(Event).where(Event.kind == LATE_EVENT)).all())


# --- finding 1: "relay access denied" for the on-call address, the alert alone ------------


@pytest.mark.integration
@pytest.mark.parametrize("escalate_max", [3, 0])
def test_alert_denied_as_relay_while_alone_is_failed_over_within_minutes(
    tmp_path: Path,
    filtered: tuple[SimpleNamespace, _Filter],
    caplog: pytest.LogCaptureFixture,
    escalate_max: int,
) -> None:
    """The on-call domain is mistyped and the relay answers "Relay access denied" for it
    only; the alert (an urgent follow-up: no acknowledgement with it) is alone in every
    run, so ``intake.send`` reads it as the relay refusing us and keeps it queued. Before,
    the backup heard at +30 min through an escalation quoting the resident, and with
    ``escalate_max = 0`` never. Now: a content-free notice to the backup within minutes."""
    smtp, server = filtered
    server.rcpt_reply[ONCALL] = f"554 5.7.1 <{ONCALL}>: Relay access denied"
    svc = make_svc(tmp_path, smtp, extra=f"escalate_max = {escalate_max}")
    caplog.set_level(logging.DEBUG)
    urgent_case(svc, NOON)

    first = _first_to(svc, server, BACKUP, NOON, 40)

    assert first is not None and first <= 4, first
    notice = next(m for m in server.received if BACKUP in m.rcpt_tos)
    assert "C000001" in subject(notice) and "service.py show C000001" in body(notice)
    assert "まだ送信できていません" in body(notice)
    for word in ("消えたい", "090-1234-5678", "resident@example.jp"):
        assert word not in body(notice) + subject(notice), word
    assert len(_late_events(svc)) == 1  # noticed once, failed over once
    late = [r for r in errors_of(caplog) if "minutes after it was queued" in r.getMessage()]
    assert len(late) == 1 and late[0].case == "C000001"  # type: ignore[attr-defined]
    no_address_above_debug(caplog.records)


# --- finding 2: two addresses of one alert deferred, read as the relay's trouble ----------


@pytest.mark.integration
def test_alert_whose_two_addresses_are_deferred_is_failed_over_with_escalation_off(
    tmp_path: Path,
    filtered: tuple[SimpleNamespace, _Filter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At night the alert goes to on-call and night duty; both mailboxes answer 452. The
    one row's two addresses made the run "relay-wide": the alert never gave up and was
    never failed over (with ``escalate_max = 0`` nobody was ever told). Now the backup
    gets the content-free notice within minutes, once, whatever ``intake.send`` decides."""
    smtp, server = filtered
    server.rcpt_reply[ONCALL] = "452 4.2.2 Mailbox full"
    server.rcpt_reply[NIGHT_DUTY] = "452 4.2.2 Mailbox full"
    svc = make_svc(tmp_path, smtp, extra=f'off_hours = ["{NIGHT_DUTY}"]\nescalate_max = 0')
    caplog.set_level(logging.DEBUG)
    urgent_case(svc, NIGHT)

    first = _first_to(svc, server, BACKUP, NIGHT, 60)

    assert first is not None and first <= 4, first
    to_backup = [m for m in server.received if BACKUP in m.rcpt_tos]
    assert to_backup[0].rcpt_tos == [BACKUP]  # the others only
    assert "まだ送信できていません" in body(to_backup[0])
    assert len(_late_events(svc)) == 1
    [row] = [
        r for r in outbox(svc, "escalation") if r.created_at <= to_db(NIGHT + timedelta(minutes=5))
    ]
    assert json.loads(row.recipients) == [BACKUP]
    no_address_above_debug(caplog.records)


def test_a_late_alert_is_due_once_and_a_delivered_one_never(tmp_path: Path) -> None:
    """Pure state: the lateness needs an alert still queued (or sending) for
    ``UNDELIVERED_AFTER``; a sent one (also partly, with a retry row pending) is not."""
    from intake.escalate import UNDELIVERED_AFTER, alert_state

    svc = make_svc(tmp_path, SimpleNamespace(host="127.0.0.1", port=1))
    case_id = urgent_case(svc, NOON)
    with Session(svc.engine) as s:
        early = alert_state(s, case_id, NOON + UNDELIVERED_AFTER - timedelta(seconds=1))
        late = alert_state(s, case_id, NOON + UNDELIVERED_AFTER)
        assert early is not None and not early.late and not early.failover_owed
        assert late is not None and late.late and late.failover_owed
        alert = s.exec(select(Outbox).where(Outbox.kind == "alert")).one()
        alert.status = "sent"
        s.add(alert)
        s.flush()
        sent = alert_state(s, case_id, NOON + timedelta(hours=1))
        assert sent is not None and not sent.late and not sent.failover_owed


@pytest.mark.integration
def test_an_alert_delivered_to_some_with_a_retry_pending_gets_no_late_failover(
    tmp_path: Path,
    filtered: tuple[SimpleNamespace, _Filter],
) -> None:
    """On-call has the alert; night duty's mailbox defers it for 8 minutes (an
    ``alert-retry`` row waits): not late, nobody else is told before the schedule."""
    smtp, server = filtered
    server.rcpt_reply[NIGHT_DUTY] = "451 4.3.0 try later"
    svc = make_svc(tmp_path, smtp, extra=f'off_hours = ["{NIGHT_DUTY}"]')
    urgent_case(svc, NIGHT)
    run_jobs(svc, NIGHT, NIGHT + timedelta(minutes=7), timedelta(minutes=1))
    server.rcpt_reply.clear()
    run_jobs(svc, NIGHT + timedelta(minutes=8), NIGHT + timedelta(minutes=20), timedelta(minutes=1))

    assert [m.rcpt_tos for m in server.received] == [[ONCALL], [NIGHT_DUTY]]
    assert outbox(svc, "escalation") == [] and _late_events(svc) == []


# --- finding 8: an escalation refused before the failover spent a reminder --------------


@pytest.mark.integration
def test_an_escalation_refused_before_the_alert_was_known_undelivered_does_not_spend_the_cap(
    tmp_path: Path, held_port: socket.socket
) -> None:
    """escalate_max = 3, first escalation after 1 minute. SMTP is down from noon to 12:40:
    escalation 1 (quoting the resident, the alert not yet late) is queued at 12:01, the
    late alert's content-free notice at 12:03. At 12:40 the content filter refuses the
    alert and escalation 1; the notice gets through. Escalation 1 reached nobody: before,
    it counted toward the cap all the same and one reminder fewer reached anyone."""
    server = _Filter()
    server.data_reply = "554 5.7.1 Message rejected as spam"
    port = held_port.getsockname()[1]  # refuses connections until served
    smtp = SimpleNamespace(host="127.0.0.1", port=port)
    svc = make_svc(tmp_path, smtp, extra="escalate_after_minutes = 1\nescalate_max = 3")
    urgent_case(svc, NOON)
    run_jobs(svc, NOON, NOON + timedelta(minutes=39), timedelta(minutes=1))  # SMTP down
    assert [r.status for r in outbox(svc, "escalation")] == ["queued", "queued"]
    controller = serve_smtp(server, held_port)
    try:
        run_jobs(svc, NOON + timedelta(minutes=40), NOON + timedelta(hours=3), timedelta(minutes=1))
    finally:
        controller.stop()

    statuses = [r.status for r in outbox(svc, "escalation")]
    assert statuses == ["failed", "sent", "sent", "sent", "sent"]
    # The late notice, then three reminders, as configured (the notice is a failover and
    # no reminder: review 6a F3).
    assert len(server.received) == 1 + 3, "three reminders reached someone, as configured"
    for mail in server.received:
        assert "消えたい" not in body(mail)


# --- finding 5: a reply to an earlier alert acknowledged a later one of the same batch ----


def _follow_up_alert(svc: Service, case_id: int, now: datetime) -> Outbox:
    """An urgent follow-up of the case: the pipeline's own ``_queue_alert`` queues alert 2."""
    from intake.pipeline import _queue_alert
    from intake.store import Case

    with session_scope(svc.engine) as s:
        case = s.get(Case, case_id)
        assert case is not None
        msg = StoredMessage(
            mailbox=svc.settings.mailbox.key,
            sha256=uuid.uuid4().hex,
            raw=b"x",
            received_at=to_db(now),
            status="processed",
            case_id=case_id,
            new_text="今夜薬を全部飲みます",
        )
        s.add(msg)
        s.flush()
        _queue_alert(svc, s, case, msg, now, None, now)
    return outbox(svc, "alert")[-1]


def _reply_from_oncall(svc: Service, case_id: int, answered: Outbox, now: datetime) -> None:
    """The ``alert-acknowledged`` event of an on-call reply, its detail naming the row it
    answers (``outbox N: ...``, as bounce events do)."""
    from intake.escalate import ACK_EVENT, add_event

    with session_scope(svc.engine) as s:
        detail = f"outbox {answered.id}: message 99 from {ONCALL}"
        add_event(s, ACK_EVENT, case_id, detail, ONCALL, now)


@pytest.mark.integration
def test_a_reply_to_alert_1_in_the_batch_of_alert_2_does_not_acknowledge_alert_2(
    tmp_path: Path, filtered: tuple[SimpleNamespace, _Filter]
) -> None:
    """Alert 1 goes out at noon. At 12:40 one poll batch holds the on-call person's reply
    to alert 1 and the resident's urgent follow-up (alert 2): one ``now`` for both. The
    reply counted "at or after alert 2 was queued", so alert 2 was never escalated; it
    answers alert 1 only, and alert 2 is escalated on its schedule."""
    smtp, server = filtered
    svc = make_svc(tmp_path, smtp)
    case_id = urgent_case(svc, NOON)
    deliver_outbox(svc.settings.smtp, svc.engine, NOON, svc.settings.mailbox.key)
    [alert1] = outbox(svc, "alert")
    assert alert1.status == "sent"
    batch = NOON + timedelta(minutes=40)
    alert2 = _follow_up_alert(svc, case_id, batch)
    _reply_from_oncall(svc, case_id, alert1, batch)

    run_jobs(svc, batch, batch + timedelta(minutes=35), timedelta(minutes=1))

    [escalation] = outbox(svc, "escalation")
    assert escalation.status == "sent"
    assert escalation.created_at >= to_db(batch + timedelta(minutes=30))
    reminder = server.received[-1]
    assert "再通知" in subject(reminder)
    assert str(reminder.message["In-Reply-To"]).strip() == alert2.message_id


@pytest.mark.integration
def test_a_reply_to_alert_2_or_its_escalation_acknowledges_it(
    tmp_path: Path, filtered: tuple[SimpleNamespace, _Filter]
) -> None:
    """The other side: alert 1 escalated at 12:30, alert 2 queued at 12:40 and escalated
    at 13:10; a reply naming that escalation of alert 2 stops its schedule."""
    smtp, _ = filtered
    svc = make_svc(tmp_path, smtp)
    case_id = urgent_case(svc, NOON)
    batch = NOON + timedelta(minutes=40)
    run_jobs(svc, NOON, batch - timedelta(minutes=1), timedelta(minutes=1))
    _follow_up_alert(svc, case_id, batch)
    run_jobs(svc, batch, batch + timedelta(minutes=31), timedelta(minutes=1))
    _, second = outbox(svc, "escalation")
    assert second.status == "sent" and second.created_at >= to_db(batch + timedelta(minutes=30))
    _reply_from_oncall(svc, case_id, second, batch + timedelta(minutes=32))
    run_jobs(svc, batch + timedelta(minutes=32), batch + timedelta(hours=3), timedelta(minutes=5))
    assert len(outbox(svc, "escalation")) == 2


def test_a_reply_to_an_earlier_alert_keeps_a_later_one_a_candidate(tmp_path: Path) -> None:
    """Past the recent window only the state keeps an alert looked at: a reply naming
    alert 1 must not take alert 2 off the list; one naming alert 2 does."""
    from intake.escalate import _candidates, escalation_policy

    svc = make_svc(tmp_path, SimpleNamespace(host="127.0.0.1", port=1))
    case_id = urgent_case(svc, NOON)
    [alert1] = outbox(svc, "alert")
    batch = NOON + timedelta(minutes=40)
    alert2 = _follow_up_alert(svc, case_id, batch)
    _reply_from_oncall(svc, case_id, alert1, batch)
    policy = escalation_policy(svc.settings)
    key = svc.settings.mailbox.key
    later = NOON + timedelta(days=40)
    with Session(svc.engine) as s:
        assert _candidates(s, key, later, policy) == [case_id]
    _reply_from_oncall(svc, case_id, alert2, batch + timedelta(minutes=1))
    with Session(svc.engine) as s:
        assert _candidates(s, key, later, policy) == []


@pytest.mark.integration
def test_once_fails_a_refused_alert_over_to_the_backup_in_the_same_run(
    tmp_path: Path,
    dovecot: Any,
    oncall_refused: tuple[SimpleNamespace, _RefuseRcpt],
) -> None:
    """`once` (cron deployments) runs the escalation pass too: without it a refused alert
    reached nobody and was logged only at WARNING until a `run` worker came along."""
    import os

    from intake import samples

    smtp, server = oncall_refused
    dovecot.append(samples.consultation("mika.test@example.jp", "相談", "もう死にたいです"))
    config = write_config(tmp_path, dovecot, smtp)  # type: ignore[arg-type]
    done = subprocess.run(
        [sys.executable, "service.py", "once", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TEST_IMAP_PASSWORD": dovecot.password},
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    assert "escalations queued 1" in done.stdout
    assert [m.rcpt_tos for m in server.received if BACKUP in m.rcpt_tos] == [[BACKUP]]
    assert "ERROR" in done.stderr and "mika.test" not in done.stderr


# --- review 6a, F3: a late notice spent the on-call person's first reminder ---------------


@pytest.mark.integration
@pytest.mark.parametrize("cap", [1, 3])
def test_a_late_alerts_notice_spends_no_reminder_of_escalate_max(
    tmp_path: Path, filtered: tuple[SimpleNamespace, _Filter], cap: int
) -> None:
    """The relay defers on-call and backup for 10 minutes. The alert is late at +3 and its
    notice goes to the backup; both arrive at +10. The notice tells the others the alert
    was late: it is a failover, queued whatever ``escalate_max``, and no reminder. The
    on-call person then gets ``escalate_max`` reminders, the first an interval after the
    notice arrived (not at +60, and with ``escalate_max = 1`` not never)."""
    smtp, server = filtered
    server.rcpt_reply[ONCALL] = "451 4.3.0 relay busy"
    server.rcpt_reply[BACKUP] = "451 4.3.0 relay busy"
    svc = make_svc(tmp_path, smtp, extra=f"escalate_max = {cap}")
    urgent_case(svc, NOON)
    arrivals: list[tuple[int, list[str], str]] = []  # minute, recipients, subject
    t = NOON
    while t <= NOON + timedelta(hours=4):
        if t >= NOON + timedelta(minutes=10):
            server.rcpt_reply.clear()
        escalate(svc, t)
        deliver_outbox(svc.settings.smtp, svc.engine, t, svc.settings.mailbox.key)
        minute = int((t - NOON).total_seconds() // 60)
        arrivals += [(minute, m.rcpt_tos, subject(m)) for m in server.received[len(arrivals) :]]
        t += timedelta(minutes=1)

    [(alert_at, _, _)] = [a for a in arrivals if a[1] == [ONCALL]]
    assert 10 <= alert_at <= 12
    notice, *reminders = [a for a in arrivals if is_escalation(a[2])]
    assert notice[1] == [BACKUP] and notice[0] <= 12
    assert notice[2].startswith(FAILOVER_SUBJECT) and "再通知" not in notice[2]
    assert all("再通知" in r[2] for r in reminders)
    assert len(reminders) == cap, arrivals
    assert all(ONCALL in r[1] for r in reminders)
    first = reminders[0][0]
    assert 30 <= first < 60 and first >= notice[0] + 30, arrivals


# --- the failover's subject: its readers never got a first notice ---------------------


@pytest.mark.parametrize("failover", [True, False])
def test_a_failover_is_not_called_a_re_notice_and_a_reply_keeping_its_subject_finds_it(
    tmp_path: Path, failover: bool
) -> None:
    """The failover goes to people who never got the alert: 再通知 told them they had
    missed one. Its subject says what it is, content-free (no 緊急), and still carries the
    case number and confirmation code a phone mailer's reply is recognised by. A reminder
    of an undelivered alert is still a 再通知."""
    from types import SimpleNamespace as State

    from intake.compose import ack_code
    from intake.escalate import _undelivered_notice
    from intake.pipeline import _staff_subject
    from intake.store import Case
    from tests.helpers import offline_service

    svc = offline_service(tmp_path)
    case = Case(id=7, mailbox=svc.settings.mailbox.key, sender="r@example.jp", partner="city")
    state = State(alert_failed=True, late=False, alert_at=NIGHT)
    notice = _undelivered_notice(
        svc,
        case,
        state,
        [BACKUP],
        1,
        NIGHT,
        NIGHT + timedelta(minutes=1),
        failover=failover,  # type: ignore[arg-type]
    )
    title = str(notice["Subject"])
    code = ack_code(str(notice["Message-ID"]))
    if failover:
        assert title == f"【至急】当番への通知が届いていない相談 C000007 確認コード {code}"
    else:
        assert title == f"【至急・再通知】通知が届いていない相談 C000007 確認コード {code}"
    assert "緊急" not in title
    assert _staff_subject("Re: " + title) == (7, {code})
