"""The confirmation code in every alert and escalation subject (``intake.compose.ack_code``).

A staff mail without thread headers (phone and carrier mailers drop In-Reply-To) used to
acknowledge a case's latest alert as soon as its subject named the case number. A From
address can be forged and case numbers are no secret (the resident's acknowledgement
names theirs), so anyone could silence the escalation of an urgent case. Now such a mail
acknowledges only when its subject also keeps the code of one of the case's alerts or
escalations, which only their readers have seen. Real Dovecot and a real SMTP server
wherever mail flows; the tests that a forged or mangled subject is (not) accepted fail on
the code before the change.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlmodel import Session, select

from intake import samples
from intake.escalate import ACK_EVENT, escalate
from intake.localservers import LocalDovecot, LocalSMTP, ReceivedMail
from intake.pipeline import STAFF_URGENT_WORDS_EVENT
from intake.store import Case, Outbox
from tests.helpers import BACKUP, ONCALL, offline_service, settled
from tests.test_staff_replies import (
    COORDINATOR,
    JST,
    RESIDENT,
    alerted_case,
    cases,
    digested_senders,
    events,
    message_from,
    once,
    service,
    subject,
)

# Matches the subject's code however it is later checked: the label, then the code.
_LABELLED = re.compile(r"確認コード ([A-Z0-9]+)$")
CODE_CHARS = set("ABCDEFGHJKLMNPQRSTUVWXYZ23456789")


def code_of(mail: ReceivedMail) -> str:
    """The confirmation code at the end of an alert's or escalation's subject."""
    m = _LABELLED.search(subject(mail))
    assert m is not None, "the subject carries a confirmation code"
    return m.group(1)


def body_of(mail: ReceivedMail) -> str:
    part = mail.message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def outbox_rows(svc: Any, kind: str) -> list[Outbox]:
    with Session(svc.engine) as session:
        return list(session.exec(select(Outbox).where(Outbox.kind == kind)).all())


def full_width(text: str) -> str:
    """ASCII letters and digits as a phone's full-width input writes them."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


@pytest.mark.integration
def test_phone_reply_keeping_the_subject_with_its_code_acknowledges_the_alert(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    alert = alerted_case(svc, dovecot, smtp_server, base)
    code = code_of(alert)
    assert len(code) == 5 and set(code) <= CODE_CHARS
    assert f"「確認コード {code}」は消さずに" in body_of(alert)
    [row] = outbox_rows(svc, "alert")

    dovecot.append(samples.consultation(ONCALL, "Re: " + subject(alert), "対応します。"))
    once(svc, base + timedelta(minutes=5))

    [ack] = events(svc, ACK_EVENT)
    assert (ack.case_id, ack.actor) == (1, ONCALL)
    assert f"alert outbox {row.id}" in ack.detail, "the event names the alert whose code it was"
    assert escalate(svc, base + timedelta(minutes=31)) == 0
    assert settled(smtp_server) == []


@pytest.mark.integration
@pytest.mark.parametrize("which", ["no-code", "wrong-code", "wrong-code-coordinator"])
def test_forged_staff_mail_naming_the_case_without_its_code_does_not_stop_escalation(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
    which: str,
) -> None:
    """Anyone can write From: the on-call address and read a case number off the
    resident's acknowledgement: that is no acknowledgement. The mail is kept with the
    case for staff (nothing lost), out of every digest, and the escalation goes on."""
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    alert = alerted_case(svc, dovecot, smtp_server, base)
    plain = subject(alert).rsplit(" 確認コード ", 1)[0]
    assert plain.endswith("C000001")
    real = _LABELLED.search(subject(alert))
    wrong = "YYYYY" if real and real.group(1) == "ZZZZZ" else "ZZZZZ"
    forged = {
        "no-code": ("Re: " + plain, ONCALL),
        "wrong-code": (f"Re: {plain} 確認コード {wrong}", ONCALL),
        "wrong-code-coordinator": (f"Re: {plain} 確認コード {wrong}", COORDINATOR),
    }
    title, sender = forged[which]
    dovecot.append(samples.consultation(sender, title, "対応済みです。折り返しは不要です。"))
    t1 = base + timedelta(minutes=5)
    once(svc, t1)

    assert events(svc, ACK_EVENT) == []
    assert [c.number for c in cases(svc)] == ["C000001"], "no new case"
    stored = message_from(svc, sender)
    assert (stored.case_id, stored.is_followup, stored.status) == (1, True, "staff")
    assert [e.case_id for e in events(svc, "staff-mail")] == [1]
    assert settled(smtp_server, 0.5) == [], "no acknowledgement, no alert"

    assert escalate(svc, base + timedelta(minutes=31)) == 1
    svc.deliver(base + timedelta(minutes=31))
    [escalation] = smtp_server.wait_for(1, timeout=10)
    assert BACKUP in escalation.rcpt_tos and "再通知" in subject(escalation)
    assert digested_senders(svc, t1) == {RESIDENT}, "the forged words reach no partner"


@pytest.mark.integration
@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda s: "RE: " + full_width(s), id="full-width"),
        pytest.param(lambda s: "Fw: Re: " + s.lower(), id="lower-case"),
        pytest.param(lambda s: "Re:" + s.replace(" ", ""), id="spaces-dropped"),
        pytest.param(
            lambda s: "re: " + re.sub(r"([A-Z0-9]{3})([A-Z0-9]{2})$", r"\1 \2", s),
            id="space-added-in-code",
        ),
        pytest.param(
            lambda s: "Re: C000001 " + full_width(s.rsplit(" ", 1)[1].lower()) + " 対応中",
            id="typed-by-hand",
        ),
    ],
)
def test_a_mangled_but_kept_subject_with_its_code_still_acknowledges(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
    mangle: Any,
) -> None:
    """Phone mailers and thumbs: full-width letters and digits, lower case, a space dropped
    or added, reply and forward prefixes. NFKC and case-insensitive."""
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    alert = alerted_case(svc, dovecot, smtp_server, base)
    title = mangle(subject(alert))

    dovecot.append(samples.consultation(ONCALL, title, "対応します"))
    once(svc, base + timedelta(minutes=5))

    assert [(e.case_id, e.actor) for e in events(svc, ACK_EVENT)] == [(1, ONCALL)]
    assert escalate(svc, base + timedelta(minutes=31)) == 0


@pytest.mark.integration
def test_escalation_has_its_own_code_and_a_reply_keeping_it_acknowledges(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backup person has only the escalation: its code, not the alert's, is what
    they can keep. The event names the escalation."""
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    alert = alerted_case(svc, dovecot, smtp_server, base)
    assert escalate(svc, base + timedelta(minutes=31)) == 1
    svc.deliver(base + timedelta(minutes=31))
    [escalation] = smtp_server.wait_for(1, timeout=10)
    smtp_server.clear()
    assert code_of(escalation) != code_of(alert)
    assert f"「確認コード {code_of(escalation)}」" in body_of(escalation)
    [row] = outbox_rows(svc, "escalation")

    dovecot.append(samples.consultation(BACKUP, "RE: " + subject(escalation), "折り返します"))
    once(svc, base + timedelta(minutes=35))

    [ack] = events(svc, ACK_EVENT)
    assert (ack.case_id, ack.actor) == (1, BACKUP)
    assert f"escalation outbox {row.id}" in ack.detail
    assert escalate(svc, base + timedelta(hours=3)) == 0
    assert settled(smtp_server) == []


@pytest.mark.integration
def test_the_alerts_code_still_acknowledges_after_an_escalation(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The on-call person answers the first alert late, after an escalation went out:
    any of the case's alerts and escalations may be answered."""
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    alert = alerted_case(svc, dovecot, smtp_server, base)
    assert escalate(svc, base + timedelta(minutes=31)) == 1
    svc.deliver(base + timedelta(minutes=31))
    smtp_server.wait_for(1, timeout=10)
    smtp_server.clear()

    dovecot.append(samples.consultation(ONCALL, "Re: " + subject(alert), "遅れました、対応します"))
    once(svc, base + timedelta(minutes=40))

    assert [e.case_id for e in events(svc, ACK_EVENT)] == [1]
    assert escalate(svc, base + timedelta(hours=3)) == 0


@pytest.mark.integration
def test_phone_reply_quoting_the_alert_without_markers_acknowledges_and_alerts_nobody(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 6a F2. A phone mailer that drops the thread headers and quotes the alert
    with no ">" and no header quotes its reasons (・「死にたい」…). That quote is our own
    text: not the on-call person's words, so no urgency of theirs, no second alert, the
    alert acknowledged by the code, and nothing of it in the partner's digest."""
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    alert = alerted_case(svc, dovecot, smtp_server, base)
    body = "対応します。\n\n" + body_of(alert)
    assert "死にたい" in body_of(alert), "the alert lists the crisis words it quotes"
    dovecot.append(samples.consultation(ONCALL, "Re: " + subject(alert), body))
    t1 = base + timedelta(minutes=5)
    once(svc, t1)

    assert [(e.case_id, e.actor) for e in events(svc, ACK_EVENT)] == [(1, ONCALL)]
    assert events(svc, STAFF_URGENT_WORDS_EVENT) == [], "the quote was read as ours"
    assert message_from(svc, ONCALL).new_text == "対応します。"
    assert len(outbox_rows(svc, "alert")) == 1, "no second alert"
    assert settled(smtp_server, 0.5) == []
    assert escalate(svc, base + timedelta(minutes=40)) == 0
    assert digested_senders(svc, t1 + timedelta(minutes=1)) == {RESIDENT}


@pytest.mark.integration
def test_staff_reply_with_the_code_and_urgent_words_acknowledges_and_is_noted(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 6a F2. The on-call person's reply keeps the code and repeats the crisis
    words in their own sentence. The code proves its writer got the alert (a forged From
    does not have it): it acknowledges, alerts nobody, stays out of every digest, and an
    event keeps that it carried urgent words."""
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    alert = alerted_case(svc, dovecot, smtp_server, base)
    [row] = outbox_rows(svc, "alert")
    words = "死にたいと書いている方ですね。すぐ電話します。"
    dovecot.append(samples.consultation(ONCALL, "Re: " + subject(alert), words))
    t1 = base + timedelta(minutes=5)
    once(svc, t1)

    [ack] = events(svc, ACK_EVENT)
    assert (ack.case_id, ack.actor) == (1, ONCALL)
    [noted] = events(svc, STAFF_URGENT_WORDS_EVENT)
    assert (noted.case_id, noted.actor) == (1, ONCALL)
    assert f"alert outbox {row.id}" in noted.detail and words not in noted.detail
    assert len(outbox_rows(svc, "alert")) == 1, "no second alert"
    assert settled(smtp_server, 0.5) == []
    assert [c.number for c in cases(svc)] == ["C000001"]
    assert escalate(svc, base + timedelta(minutes=40)) == 0
    assert digested_senders(svc, t1 + timedelta(minutes=1)) == {RESIDENT}


# --- pure parts -----------------------------------------------------------------------------


def test_ack_code_is_five_unambiguous_characters_fixed_by_the_message_id() -> None:
    from intake.compose import ack_code

    codes = {ack_code(f"<{n}.alert@city.example.jp>") for n in range(2000)}
    assert all(len(c) == 5 and set(c) <= CODE_CHARS for c in codes)
    assert not any(ch in c for c in codes for ch in "01OI")
    assert len(codes) > 1990, "codes of different mails differ"
    assert ack_code("<1.alert@city.example.jp>") == ack_code("<1.alert@city.example.jp>")


def test_a_subject_stuffed_with_guesses_confirms_nothing() -> None:
    """One mail may not try many codes: more than three candidates and none counts."""
    from intake.pipeline import _staff_subject

    real = "K7QXA"
    assert _staff_subject(f"Re: 相談 C000123 確認コード {real}") == (123, {real})
    stuffed = " ".join(["ABCDE", "FGHJK", "LMNPQ", real])
    assert _staff_subject(f"Re: C000123 {stuffed}") == (123, set())
    assert _staff_subject(f"Re: 相談 確認コード {real}") == (None, set()), "no case number"


def test_the_failover_escalation_carries_its_own_code_and_no_resident_words(
    tmp_path: Path,
) -> None:
    """The content-free escalation of an undelivered alert is built in code, not from
    the template: it needs the code as much as any other escalation."""
    from intake.compose import ack_code
    from intake.escalate import _undelivered_notice

    svc = offline_service(tmp_path)
    case = Case(id=7, mailbox=svc.settings.mailbox.key, sender=RESIDENT, partner="city")
    now = datetime.now(JST)
    notice = _undelivered_notice(
        svc,
        case,
        SimpleNamespace(alert_failed=True),
        [BACKUP],
        1,
        now,
        now,  # type: ignore[arg-type]
    )
    code = ack_code(str(notice["Message-ID"]))
    assert str(notice["Subject"]).endswith(f"C000007 確認コード {code}")
    text = notice.get_body(preferencelist=("plain",))
    assert text is not None
    assert f"「確認コード {code}」は消さずに" in str(text.get_content())  # type: ignore[attr-defined]


def test_message_ids_do_not_follow_the_random_module() -> None:
    """Alert codes come from Message-IDs: re-seeding ``random`` must not repeat one."""
    import random

    from intake.compose import new_message_id

    random.seed(7)
    first = new_message_id("alert", "city.example.jp")
    random.seed(7)
    assert new_message_id("alert", "city.example.jp") != first
    assert first.endswith(".alert@city.example.jp>") and len(first) > 40


def _quoting(ours: str) -> str:
    """A phone reply quoting our mail as some carrier mailers do: no ">" and no header."""
    return "対応します。\n\n" + ours


@pytest.mark.parametrize("escalation", [0, 2])
def test_the_alert_and_its_escalations_quoted_without_markers_are_ours(
    tmp_path: Path, escalation: int
) -> None:
    """The shipped alert template, first alert and re-notice, starts with a line of
    ``OWN_TEXT_MARKERS``: quoted back without a marker, none of it (the crisis words it
    lists) is read as the reply's own words."""
    from intake.compose import render_alert
    from intake.quotes import split_quoted

    svc = offline_service(tmp_path)
    now = datetime.now(JST)
    case = {
        "number": "C000007",
        "received": now,
        "callback_due": now,
        "partner_name": "笠岡市",
        "sender": RESIDENT,
        "phones": ["090-1234-5678"],
        "reasons": [{"surface": "死にたい", "rule": "urgent.suicide"}],
        "automatic": None,
    }
    alert = render_alert(
        svc.env, sender=svc.sender, to=[ONCALL], case=case, now=now, tz=JST, escalation=escalation
    )
    text = alert.get_body(preferencelist=("plain",))
    assert text is not None
    body = str(text.get_content())  # type: ignore[attr-defined]
    assert "死にたい" in body
    assert split_quoted(_quoting(body))[0] == "対応します。"


@pytest.mark.parametrize("why", ["refused", "late", "retry-failed"])
def test_the_failover_and_late_notices_quoted_without_markers_are_ours(
    tmp_path: Path, why: str
) -> None:
    """The content-free notices are built in code: they open with the same re-notice line,
    so a reply quoting one is as much ours as one quoting the alert."""
    from intake.escalate import _undelivered_notice
    from intake.quotes import split_quoted

    svc = offline_service(tmp_path)
    case = Case(id=7, mailbox=svc.settings.mailbox.key, sender=RESIDENT, partner="city")
    now = datetime.now(JST)
    state = SimpleNamespace(
        alert_failed=why == "refused", late=why == "late", alert_at=now - timedelta(minutes=4)
    )
    notice = _undelivered_notice(svc, case, state, [BACKUP], 1, now, now)  # type: ignore[arg-type]
    text = notice.get_body(preferencelist=("plain",))
    assert text is not None
    body = str(text.get_content())  # type: ignore[attr-defined]
    new, quoted = split_quoted(_quoting(body))
    assert new == "対応します。" and "C000007" in quoted


@pytest.mark.integration
def test_a_reply_with_the_code_from_an_address_not_on_call_acknowledges_the_alert(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review rv10a F8: the on-call box forwarded to a personal phone; the reply comes from
    that phone's address with the case number and the code in the subject. The code proves
    the writer read the alert: it acknowledges. It opened a new consultation, sent the
    on-call person the resident's acknowledgement, and the escalation went on."""
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    alert = alerted_case(svc, dovecot, smtp_server, base)
    phone = "taro.oncall@docomo.ne.jp"
    title = "RE: " + full_width(subject(alert))  # a phone's full-width subject, too
    dovecot.append(samples.consultation(phone, title, "対応します。"))
    once(svc, base + timedelta(minutes=5))

    [ack] = events(svc, ACK_EVENT)
    assert (ack.case_id, ack.actor) == (1, phone)
    assert [c.number for c in cases(svc)] == ["C000001"], "no new case"
    assert settled(smtp_server, 0.5) == [], "no acknowledgement to the on-call person's phone"
    assert escalate(svc, base + timedelta(minutes=31)) == 0


@pytest.mark.integration
def test_a_mail_from_another_address_naming_the_case_with_a_wrong_code_is_a_consultation(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the right code a stranger's mail naming a case acknowledges nothing."""
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    alert = alerted_case(svc, dovecot, smtp_server, base)
    plain = subject(alert).rsplit(" 確認コード ", 1)[0]
    real = _LABELLED.search(subject(alert))
    wrong = "YYYYY" if real and real.group(1) == "ZZZZZ" else "ZZZZZ"
    dovecot.append(
        samples.consultation("x.stranger@example.jp", f"Re: {plain} 確認コード {wrong}", "対応済み")
    )
    once(svc, base + timedelta(minutes=5))
    assert events(svc, ACK_EVENT) == []
    assert escalate(svc, base + timedelta(minutes=31)) == 1
