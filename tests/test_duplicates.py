"""The same mail stored twice with other bytes is one consultation (real Dovecot + SMTP).

An MTA that retries after a timeout delivers a second copy with another Received line; a
folder migrated or restored gets new headers or another transfer encoding. The SHA-256
of the bytes cannot see that these are one mail; the Message-ID, the sender and the
resident's words can. A reused Message-ID with other words must stay its own mail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select

from intake import samples
from intake.config import load_settings
from intake.localservers import LocalDovecot, LocalSMTP
from intake.pipeline import Service
from intake.staff import show_case
from intake.store import Case, Event, StoredMessage, session_scope
from tests.helpers import ONCALL, settled, write_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]

URGENT = "もう死にたいです。誰にも言えません。"
RESIDENT = "yuki.test@example.jp"
MESSAGE_ID = "<same-mail-1@example.jp>"


def _once(config: Path, password: str) -> None:
    """One `service.py once`, as an operator or cron runs it."""
    env = {**os.environ, "TEST_IMAP_PASSWORD": password}
    done = subprocess.run(
        [sys.executable, str(ROOT / "service.py"), "once", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr


def _mail(charset: str = "utf-8", text: str = URGENT) -> bytes:
    return samples.consultation(RESIDENT, "相談", text, charset=charset, message_id=MESSAGE_ID)


def _counts(config: Path) -> tuple[int, list[str]]:
    svc = Service.from_settings(load_settings(config))
    try:
        with session_scope(svc.engine) as session:
            cases = session.exec(select(Case)).all()
            statuses = [m.status for m in session.exec(select(StoredMessage)).all()]
        return len(cases), sorted(statuses)
    finally:
        svc.close()


def _sent(smtp: LocalSMTP) -> tuple[int, int]:
    mails = settled(smtp)
    acks = [m for m in mails if RESIDENT in m.rcpt_tos]
    alerts = [m for m in mails if ONCALL in m.rcpt_tos]
    return len(acks), len(alerts)


def test_same_mail_delivered_twice_in_one_poll_is_one_case_one_ack_one_alert(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
) -> None:
    raw = _mail()
    again = b"Received: from mx2.example.jp by mx.city.example.jp; retry\r\n" + raw
    dovecot.append(raw)
    dovecot.append(again)
    config = write_config(tmp_path, dovecot, smtp_server)
    _once(config, dovecot.password)
    assert _counts(config) == (1, ["duplicate", "processed"])
    assert _sent(smtp_server) == (1, 1)


def test_same_mail_brought_back_reencoded_in_a_later_poll_is_not_new(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
) -> None:
    config = write_config(tmp_path, dovecot, smtp_server)
    dovecot.append(_mail("iso-2022-jp"))
    _once(config, dovecot.password)
    # a migration tool re-encoded it (UTF-8, base64) and added a header
    dovecot.append(b"X-Migrated-From: old-server\r\n" + _mail("utf-8"))
    _once(config, dovecot.password)
    cases, statuses = _counts(config)
    assert (cases, statuses) == (1, ["duplicate", "processed"])
    assert _sent(smtp_server) == (1, 1)
    svc = Service.from_settings(load_settings(config))
    try:
        with session_scope(svc.engine) as session:
            kinds = [e.kind for e in session.exec(select(Event)).all()]
    finally:
        svc.close()
    assert kinds.count("duplicate") == 1
    # staff see both copies with the case, the second marked as a repeat
    svc = Service.from_settings(load_settings(config))
    try:
        shown = show_case(svc, "C000001")
    finally:
        svc.close()
    assert "== 受信メール (2) ==" in shown and "[重複（同じメール）]" in shown


def test_reused_message_id_with_other_words_is_its_own_mail(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
) -> None:
    """A Message-ID is the sender's claim: it never hides a different mail's urgent words."""
    dovecot.append(_mail(text="来週の相談会の時間を教えてください。"))
    dovecot.append(_mail(text=URGENT))
    config = write_config(tmp_path, dovecot, smtp_server)
    _once(config, dovecot.password)
    cases, statuses = _counts(config)
    assert cases == 2 and "duplicate" not in statuses
    assert _sent(smtp_server)[1] == 1  # the urgent one alerts


def test_urgent_words_again_after_the_case_was_closed_alert_again(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP
) -> None:
    """A client reusing a Message-ID must never hide a crisis from staff who closed the case."""
    config = write_config(tmp_path, dovecot, smtp_server)
    dovecot.append(_mail())
    _once(config, dovecot.password)
    svc = Service.from_settings(load_settings(config))
    try:
        with session_scope(svc.engine) as session:
            case = session.exec(select(Case)).one()
            case.status = "closed"
    finally:
        svc.close()
    dovecot.append(b"X-Resent: again\r\n" + _mail())
    _once(config, dovecot.password)
    cases, statuses = _counts(config)
    assert cases == 2 and "duplicate" not in statuses
    assert _sent(smtp_server)[1] == 2  # alerted both times
