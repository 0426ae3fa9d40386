"""Mail from this mailbox's own people (on-call, backup, coordinator, partner digest
addresses) that carries no thread: phone and carrier mailers drop In-Reply-To/References.

Review finding 7: the on-call person's reply to an alert from such a mailer opened a new
consultation case "from" the on-call person, got the residents' acknowledgement, went into
a partner digest, and left the alert unacknowledged, so the escalation went on. Each test
here failed before the fix. Real Dovecot and a real SMTP server throughout.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func
from sqlmodel import Session, col, select

from intake import samples
from intake.compose import ACK_SUBJECT
from intake.config import load_settings
from intake.digest import queue_digests
from intake.escalate import ACK_EVENT, escalate
from intake.fetch import Mailbox
from intake.localservers import LocalDovecot, LocalSMTP, ReceivedMail
from intake.parse import parse
from intake.pipeline import Service, process_new_mail
from intake.rules import load_rules
from intake.store import Case, DigestEntry, Event, Outbox, StoredMessage
from tests.helpers import BACKUP, ONCALL, OWN, offline_service, settled, write_config

JST = ZoneInfo("Asia/Tokyo")
RESIDENT = "resident.test@example.jp"
COORDINATOR = "coordinator.test@example.jp"
PARTNER_DIGEST = "harmony-digest@example.jp"  # rules/partners.toml


def service(
    tmp_path: Path, dovecot: LocalDovecot, smtp: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> Service:
    """A service on the local servers, with a coordinator configured."""
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    extra = f'\n[service]\ncoordinator = ["{COORDINATOR}"]\n'
    return Service.from_settings(load_settings(write_config(tmp_path, dovecot, smtp, extra=extra)))


def once(svc: Service, now: datetime) -> None:
    """What ``once`` does: read the new mail, then deliver the outbox."""
    with Mailbox(svc.settings.mailbox) as mailbox:
        process_new_mail(svc, mailbox, now)
    svc.deliver(now)


def subject(mail: ReceivedMail) -> str:
    return str(mail.message["Subject"])


def quoted(mail: ReceivedMail) -> str:
    """The mail's text quoted with "> ", as a phone mailer's reply quotes it."""
    body = mail.message.get_body(preferencelist=("plain",))
    assert body is not None
    return "\n".join("> " + line for line in str(body.get_content()).splitlines())


def alerted_case(
    svc: Service, dovecot: LocalDovecot, smtp: LocalSMTP, now: datetime
) -> ReceivedMail:
    """A resident's urgent mail read and alerted: returns the alert the on-call person got."""
    dovecot.append(
        samples.consultation(RESIDENT, "相談", "もう死にたいです。電話は090-1234-5678です。")
    )
    once(svc, now)
    [alert] = [m for m in smtp.wait_for(2, timeout=10) if ONCALL in m.rcpt_tos]
    assert "C000001" in subject(alert)
    smtp.clear()
    return alert


def cases(svc: Service) -> list[Case]:
    with Session(svc.engine) as session:
        return list(session.exec(select(Case).order_by(col(Case.id))).all())


def events(svc: Service, kind: str) -> list[Event]:
    with Session(svc.engine) as session:
        return list(session.exec(select(Event).where(Event.kind == kind)).all())


def message_from(svc: Service, sender: str) -> StoredMessage:
    with Session(svc.engine) as session:
        [msg] = session.exec(
            select(StoredMessage).where(func.lower(StoredMessage.from_addr) == sender.lower())
        ).all()
        return msg


def digested_senders(svc: Service, now: datetime) -> set[str]:
    """Queue every digest now; the senders of the messages they list."""
    queue_digests(svc, now)
    with Session(svc.engine) as session:
        rows = session.exec(
            select(StoredMessage.from_addr).join(
                DigestEntry, col(DigestEntry.message_row) == col(StoredMessage.id)
            )
        ).all()
    return set(rows)


@pytest.mark.integration
@pytest.mark.parametrize(
    "sender", [ONCALL, "OnCall@Example.JP"], ids=["oncall", "oncall-upper-case"]
)
def test_oncall_reply_without_in_reply_to_acknowledges_the_alert(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
    sender: str,
) -> None:
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    alert = alerted_case(svc, dovecot, smtp_server, base)

    # The reply from a phone: the alert's subject and quoted text, no In-Reply-To.
    reply = samples.consultation(
        sender, "Re: " + subject(alert), "対応します。\n\n" + quoted(alert)
    )
    dovecot.append(reply)
    once(svc, base + timedelta(minutes=5))

    assert [(c.number, c.sender) for c in cases(svc)] == [("C000001", RESIDENT)]
    [ack] = events(svc, ACK_EVENT)
    assert (ack.case_id, ack.actor.lower()) == (1, sender.lower())
    assert settled(smtp_server) == [], "no acknowledgement to the on-call person"
    assert escalate(svc, base + timedelta(minutes=31)) == 0
    assert digested_senders(svc, base + timedelta(minutes=6)) == {RESIDENT}
    stored = message_from(svc, sender)
    assert (stored.status, stored.case_id, stored.automatic) == ("processed", None, "staff-address")


@pytest.mark.integration
def test_backup_reply_to_an_escalation_without_in_reply_to_stops_it(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    alerted_case(svc, dovecot, smtp_server, base)
    assert escalate(svc, base + timedelta(minutes=31)) == 1
    svc.deliver(base + timedelta(minutes=31))
    [escalation] = smtp_server.wait_for(1, timeout=10)
    assert BACKUP in escalation.rcpt_tos
    smtp_server.clear()

    dovecot.append(samples.consultation(BACKUP, "Re: " + subject(escalation), "折り返します"))
    once(svc, base + timedelta(minutes=35))

    assert len(cases(svc)) == 1
    assert [(e.case_id, e.actor) for e in events(svc, ACK_EVENT)] == [(1, BACKUP)]
    assert escalate(svc, base + timedelta(hours=3)) == 0
    assert settled(smtp_server) == []


@pytest.mark.integration
def test_oncall_out_of_office_without_thread_does_not_acknowledge(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An auto-reply names the case in its subject too, but nobody has read the alert."""
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    alert = alerted_case(svc, dovecot, smtp_server, base)
    away = samples.consultation(
        ONCALL,
        "自動応答: " + subject(alert),
        "ただいま不在にしております。",
        headers={"Auto-Submitted": "auto-replied"},
    )
    dovecot.append(away)
    once(svc, base + timedelta(minutes=1))

    assert len(cases(svc)) == 1, "an out-of-office reply is no consultation"
    assert events(svc, ACK_EVENT) == []
    assert [e.case_id for e in events(svc, "alert-auto-reply")] == [1]
    assert escalate(svc, base + timedelta(minutes=31)) == 1
    assert settled(smtp_server, 0.5) == []


@pytest.mark.integration
@pytest.mark.parametrize("sender", [ONCALL, COORDINATOR, PARTNER_DIGEST])
def test_staff_mail_naming_no_case_is_kept_for_staff_without_ack_or_digest(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
    sender: str,
) -> None:
    """Neither a thread nor a case number: kept as a case for a person (needs_human, at
    the general desk), but no acknowledgement, no alert and no line in any digest."""
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    dovecot.append(
        samples.consultation(sender, "Re: 連絡", "了解しました。来週の当番表を送ります。")
    )
    once(svc, base)

    [case] = cases(svc)
    assert (case.sender, case.needs_human, case.urgent) == (sender, True, False)
    assert case.partner == svc.directory.general_desk.id
    assert case.ack_state == "suppressed:staff-address"
    stored = message_from(svc, sender)
    assert (stored.case_id, stored.status) == (case.id, "staff")
    assert [e.case_id for e in events(svc, "staff-mail")] == [case.id]
    assert settled(smtp_server) == [], "no acknowledgement, no alert"
    assert queue_digests(svc, base + timedelta(minutes=1)) == {}
    with Session(svc.engine) as session:
        assert session.exec(select(Outbox)).all() == []


@pytest.mark.integration
def test_staff_mail_in_a_batch_of_residents_mail_is_sorted_out(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Residents' letters around it are written in bulk; the staff mail is not one of them."""
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    for n in range(3):
        dovecot.append(samples.consultation(f"r{n}.test@example.jp", "相談", "家賃が払えません。"))
        dovecot.append(samples.consultation(COORDINATOR, f"メモ {n}", "確認しました。"))
    once(svc, base)

    mails = smtp_server.wait_for(3, timeout=10)
    assert settled(smtp_server) == mails
    assert sorted(m.rcpt_tos[0] for m in mails) == [f"r{n}.test@example.jp" for n in range(3)]
    staff_cases = [c for c in cases(svc) if c.sender == COORDINATOR]
    assert len(staff_cases) == 3
    assert all(c.needs_human and c.ack_state == "suppressed:staff-address" for c in staff_cases)
    assert COORDINATOR not in digested_senders(svc, base + timedelta(minutes=1))


@pytest.mark.integration
def test_forged_staff_address_with_urgent_words_still_alerts(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A From address proves nothing: crisis words alert whoever seems to write them
    (only the acknowledgement is withheld: it would go to the staff address)."""
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    dovecot.append(
        samples.consultation(PARTNER_DIGEST, "相談", "もう死にたいです。今夜終わりにします。")
    )
    once(svc, base)

    [alert] = smtp_server.wait_for(1, timeout=10)
    assert settled(smtp_server) == [alert]
    assert alert.rcpt_tos == [ONCALL] and "【至急】" in subject(alert)
    [case] = cases(svc)
    assert case.urgent and case.ack_state == "suppressed:staff-address"


@pytest.mark.integration
def test_forged_staff_reply_with_urgent_words_does_not_acknowledge_the_alert(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resident who forges the on-call address on a mail naming their case, with crisis
    words of their own, must not stop the escalation: a follow-up that alerts again."""
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    alert = alerted_case(svc, dovecot, smtp_server, base)
    dovecot.append(
        samples.consultation(
            ONCALL,
            "Re: " + subject(alert).rsplit(" 確認コード ", 1)[0],  # a forger has no code
            "やっぱりもう死にます。さようなら。",
        )
    )
    t1 = base + timedelta(minutes=5)
    once(svc, t1)

    assert [c.number for c in cases(svc)] == ["C000001"]
    assert events(svc, ACK_EVENT) == []
    stored = message_from(svc, ONCALL)
    assert (stored.case_id, stored.is_followup) == (1, True)
    [again] = smtp_server.wait_for(1, timeout=10)
    assert settled(smtp_server) == [again], "an alert, no acknowledgement"
    assert "C000001" in subject(again) and again.rcpt_tos == [ONCALL]
    assert escalate(svc, t1 + timedelta(minutes=31)) == 1


@pytest.mark.integration
def test_partner_mail_naming_a_case_without_alert_is_a_followup_of_it(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partner names a case that never alerted: a follow-up of that case (as a reply
    threaded on the resident's mail is), not a new case, and no acknowledgement."""
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    dovecot.append(samples.consultation(RESIDENT, "相談", "学校でいじめられています。"))
    once(svc, base)
    [ack] = smtp_server.wait_for(1, timeout=10)
    assert subject(ack) == ACK_SUBJECT
    smtp_server.clear()

    dovecot.append(
        samples.consultation(PARTNER_DIGEST, "C000001 の件", "ご本人と連絡が取れました。")
    )
    once(svc, base + timedelta(minutes=5))

    assert [(c.number, c.sender) for c in cases(svc)] == [("C000001", RESIDENT)]
    stored = message_from(svc, PARTNER_DIGEST)
    assert (stored.case_id, stored.is_followup) == (1, True)
    assert settled(smtp_server) == []


# --- the decision itself (pure) -------------------------------------------------------------
# (The new names are imported in the tests, so that on the code before the fix the tests
# above fail on what the service did, not on an ImportError.)


def test_staff_addresses_are_oncall_coordinator_and_partner_digests_never_our_own(
    tmp_path: Path,
) -> None:
    extra = f'\n[service]\ncoordinator = ["Coordinator.Test@Example.JP", "{OWN}"]\n'
    from intake.pipeline import staff_addresses

    svc = offline_service(tmp_path, extra=extra)
    staff = staff_addresses(svc.settings, svc.directory)
    assert {ONCALL, BACKUP, COORDINATOR.lower(), PARTNER_DIGEST} <= staff
    assert "sasaean-desk@example.jp" in staff  # the general desk's digest
    assert OWN not in staff and RESIDENT not in staff


def test_a_staff_address_gets_no_acknowledgement_but_an_auto_reply_stays_one() -> None:
    from intake.pipeline import STAFF_BLOCK, acknowledgement_block

    staff = frozenset({ONCALL})
    mail = parse(samples.consultation("OnCall@example.jp", "Re: 至急 C000001", "対応します"))
    assert acknowledgement_block(mail, OWN, staff) == STAFF_BLOCK
    assert acknowledgement_block(mail, OWN) is None  # classify --json: no config, no staff
    away = parse(
        samples.consultation(
            ONCALL, "自動応答", "不在です", headers={"Auto-Submitted": "auto-replied"}
        )
    )
    assert acknowledgement_block(away, OWN, staff) == "auto-submitted:auto-replied"


def test_urgent_words_from_a_staff_address_are_still_urgent_and_never_acknowledged() -> None:
    from intake.pipeline import STAFF_BLOCK, decide

    rules = load_rules(Path(__file__).resolve().parents[1] / "rules")
    mail = parse(samples.consultation(ONCALL, "相談", "もう死にたいです。"))
    triage, block = decide(mail, rules, OWN, frozenset({ONCALL}))
    assert triage.urgent and block == STAFF_BLOCK


@pytest.mark.integration
def test_a_reply_in_the_thread_of_kept_staff_mail_stays_out_of_digests(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    note = samples.consultation(
        COORDINATOR, "メモ", "確認しました。", message_id="<note@example.jp>"
    )
    dovecot.append(note)
    dovecot.append(
        samples.consultation(COORDINATOR, "Re: メモ", "追記です。", in_reply_to="<note@example.jp>")
    )
    once(svc, base)

    assert [(c.sender, c.needs_human) for c in cases(svc)] == [(COORDINATOR, True)] * 2
    assert queue_digests(svc, base + timedelta(minutes=1)) == {}
    assert settled(smtp_server) == []
