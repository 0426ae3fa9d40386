"""A resident's mail carrying an X-Loop with our address (the city's procmail/alias
forward of the public address to the mailbox adds one, the usual ``formail -A "X-Loop:
<address>"`` idiom) was taken for our own mail come back: kept for staff, with no
acknowledgement and no partner (review rv9d F3). It is a consultation."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from intake import samples
from intake.config import load_settings
from intake.localservers import LocalDovecot, LocalSMTP
from intake.pipeline import Service
from intake.store import Case, StoredMessage, session_scope
from tests.helpers import OWN, settled, write_config
from tests.test_staff_quotes import RESIDENT, _read

pytestmark = pytest.mark.integration


def test_a_residents_mail_forwarded_by_a_loop_guarded_alias_is_a_consultation(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    svc = Service.from_settings(load_settings(write_config(tmp_path, dovecot, smtp_server)))
    body = "子どもが学校に行けなくなって三週間になります。どこに相談したらいいでしょうか。"
    dovecot.append(samples.consultation(RESIDENT, "相談", body, headers={"X-Loop": OWN}))
    _read(svc)
    with session_scope(svc.engine) as s:
        msgs = [(m.status, m.case_id) for m in s.exec(select(StoredMessage))]
        cases = [(c.partner, c.needs_human, c.ack_state) for c in s.exec(select(Case))]
    acks = [m for m in settled(smtp_server, 2.0) if RESIDENT in m.rcpt_tos]
    assert msgs and msgs[0][0] != "staff", (msgs, cases)
    assert acks, (msgs, cases)
