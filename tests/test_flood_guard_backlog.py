"""The acknowledgement flood guard after a backlog older than ``ack_window_hours``
(review rvt F4).

When the worker or IMAP was down for longer than the window, a sender's mails fall into
different batches (``batch_size``, the ~20 MB cap, ``_recover``'s one transaction per
message). The guard compared the earlier case's received time with ``now - window``,
so it saw none of them, and every mail got its own acknowledgement. Now it measures the
window against the new mail's own received time (IMAP INTERNALDATE): the outcome is the
same whatever the batches and however late the worker reads the mail.

Real Dovecot and the real pipeline; the mails' INTERNALDATE is set with APPEND, and the
worker "comes back" with a ``now`` days later. ``accept_existing``: these model a live
mailbox read late after an outage, not the first read of an old folder (which does not
acknowledge mail older than a day: tests/test_worker_ops.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from intake import samples
from intake.config import load_settings
from intake.fetch import Mailbox
from intake.localservers import LocalDovecot, LocalSMTP
from intake.pipeline import Service, process_new_mail
from intake.store import Case, Outbox
from tests.helpers import write_config

pytestmark = pytest.mark.integration

SENDER = "flood@example.jp"


def make_svc(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
    batch_size: int,
) -> Service:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    path = write_config(tmp_path, dovecot, smtp)
    text = path.read_text(encoding="utf-8")
    assert "poll_interval = 1" in text
    text = text.replace("poll_interval = 1", f"poll_interval = 1\nbatch_size = {batch_size}")
    path.write_text(text, encoding="utf-8")
    return Service.from_settings(load_settings(path))


def append_at(dovecot: LocalDovecot, raw: bytes, when: datetime) -> None:
    """Deliver ``raw`` with INTERNALDATE ``when`` (the time the pipeline reads as received)."""
    with dovecot.connect() as client:
        client.append("INBOX", raw, msg_time=when)


def mail(i: int, *, single: bool) -> bytes:
    """A new consultation from ``SENDER``. ``single``: it answers a Message-ID we never
    saw, so it opens its case through ``handle_message`` (``_acknowledge``), not the
    batch's bulk path (``_open_new_cases``)."""
    return samples.consultation(
        SENDER,
        f"相談{i}",
        f"寂しいです。その{i}",
        in_reply_to=make_msgid(domain="example.jp") if single else None,
    )


def ack_states(svc: Service) -> tuple[int, list[str]]:
    with Session(svc.engine) as s:
        acks = s.exec(select(Outbox).where(Outbox.kind == "ack")).all()
        states = s.exec(select(Case.ack_state).order_by(col(Case.id))).all()
    return len(acks), list(states)


@pytest.mark.parametrize("path", ["bulk", "single"])
@pytest.mark.parametrize("batch_size", [1, 100])
def test_a_senders_backlog_older_than_the_window_gets_one_ack_whatever_the_batches(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
    batch_size: int,
    path: str,
) -> None:
    """Three mails from one sender within minutes, read two days later: one ack, as when
    they are read at once. Before, with one mail per batch, each got its own."""
    svc = make_svc(tmp_path, dovecot, smtp_server, monkeypatch, batch_size)
    arrived = datetime.now(svc.calendar.tz).replace(microsecond=0) - timedelta(days=2)
    for i in range(3):
        append_at(dovecot, mail(i, single=path == "single"), arrived + timedelta(minutes=i))
    with Mailbox(svc.settings.mailbox) as mailbox:
        process_new_mail(svc, mailbox, arrived + timedelta(days=2), accept_existing=True)

    assert ack_states(svc) == (
        1,
        ["queued", "suppressed:rate-limited", "suppressed:rate-limited"],
    )


@pytest.mark.parametrize("path", ["bulk", "single"])
@pytest.mark.parametrize("batch_size", [1, 100])
def test_a_senders_mails_further_apart_than_the_window_each_get_an_ack_in_a_backlog(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
    batch_size: int,
    path: str,
) -> None:
    """Mails 30 h apart (window 24 h), both read three days after the first arrived: each
    is acknowledged, as it would have been when read on arrival. Before, in one batch the
    first one's ack held the second back for the batch, however far apart they came."""
    svc = make_svc(tmp_path, dovecot, smtp_server, monkeypatch, batch_size)
    first = datetime.now(svc.calendar.tz).replace(microsecond=0) - timedelta(days=3)
    append_at(dovecot, mail(0, single=path == "single"), first)
    append_at(dovecot, mail(1, single=path == "single"), first + timedelta(hours=30))
    append_at(dovecot, mail(2, single=path == "single"), first + timedelta(hours=31))
    with Mailbox(svc.settings.mailbox) as mailbox:
        process_new_mail(svc, mailbox, first + timedelta(days=3), accept_existing=True)

    assert ack_states(svc) == (2, ["queued", "queued", "suppressed:rate-limited"])


def test_a_mail_read_late_is_not_acknowledged_when_the_sender_had_one_an_hour_before(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first mail is read and acknowledged on arrival; the worker is then down, and
    the same sender's mail an hour later is read two days after that. The resident was
    acknowledged an hour before it: no second ack. Before, the first case was older than
    ``now - window`` and did not count."""
    svc = make_svc(tmp_path, dovecot, smtp_server, monkeypatch, 100)
    first = datetime.now(svc.calendar.tz).replace(microsecond=0) - timedelta(days=2)
    append_at(dovecot, mail(0, single=False), first)
    with Mailbox(svc.settings.mailbox) as mailbox:
        process_new_mail(svc, mailbox, first + timedelta(seconds=5), accept_existing=True)
    append_at(dovecot, mail(1, single=False), first + timedelta(hours=1))
    with Mailbox(svc.settings.mailbox) as mailbox:
        process_new_mail(svc, mailbox, first + timedelta(days=2), accept_existing=True)

    assert ack_states(svc) == (1, ["queued", "suppressed:rate-limited"])


@pytest.mark.parametrize("batch_size", [1, 100])
def test_a_quarantined_mail_and_the_same_residents_next_mail_after_an_outage_get_one_ack(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
    batch_size: int,
) -> None:
    """A quarantined case is dated by its mail's arrival like every case: dated by the
    read after an outage, it did not hold back the same resident's next mail (review rvs
    F1, two acks)."""
    import intake.pipeline as pipeline

    real = pipeline.classify

    def fragile(letter: Any, rules: Any) -> Any:
        if "POISON" in letter.text:
            raise RecursionError("synthetic crash")
        return real(letter, rules)

    monkeypatch.setattr(pipeline, "classify", fragile)
    svc = make_svc(tmp_path, dovecot, smtp_server, monkeypatch, batch_size)
    arrived = datetime.now(svc.calendar.tz).replace(microsecond=0) - timedelta(days=2)
    with Mailbox(svc.settings.mailbox) as mailbox:  # a live worker read the (empty) folder
        process_new_mail(svc, mailbox, arrived - timedelta(minutes=1))
    append_at(dovecot, samples.consultation(SENDER, "相談", "POISON 寂しいです"), arrived)
    append_at(
        dovecot,
        samples.consultation(SENDER, "相談2", "寂しいです。"),
        arrived + timedelta(minutes=10),
    )
    with Mailbox(svc.settings.mailbox) as mailbox:
        process_new_mail(svc, mailbox, arrived + timedelta(days=2))
    count, states = ack_states(svc)
    assert count == 1, states
    assert sorted(states) == ["queued", "suppressed:rate-limited"]
