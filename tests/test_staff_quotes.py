"""A staff member's phone reply that re-wraps our digest's quote raises no second alert.

Review rv9c R3: a partner answers a digest from a phone mailer that drops In-Reply-To and
re-wraps the quoted lines, leaving ">" off the continuations; the resident's crisis words
became the partner's own, a second alert and a new case "from" the partner. Real Dovecot
and SMTP servers; all mail synthetic.
"""

from __future__ import annotations

from datetime import datetime
from email import message_from_bytes, policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from intake import samples
from intake.config import load_settings
from intake.digest import queue_digests
from intake.fetch import Mailbox
from intake.localservers import LocalDovecot, LocalSMTP
from intake.pipeline import STAFF_URGENT_WORDS_EVENT, Service, process_new_mail
from intake.reflow import columns
from intake.store import Event, session_scope
from tests.helpers import ONCALL, settled, write_config

pytestmark = pytest.mark.integration

WEDNESDAY_10 = datetime(2027, 1, 6, 10, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
RESIDENT = "sora.test@docomo.ne.jp"
WORDS = (
    "部活のことでずっと悩んでいて、家に帰っても誰にも話を聞いてもらえず、ひとりぼっちです。"
    "もう死にたいです。"
)


def rewrap(text: str, width: int, prefix: str = "> ") -> str:
    """Quote every line with ``prefix`` and cut it at ``width`` columns; continuations get
    no prefix, as many phone mailers re-wrap quoted text."""
    out: list[str] = []
    for raw in text.split("\n"):
        line = prefix + raw
        while columns(line) > width:
            k, acc = 0, 0
            for k, ch in enumerate(line):  # noqa: B007
                acc += columns(ch)
                if acc > width:
                    break
            out.append(line[:k])
            line = line[k:]
        out.append(line)
    return "\n".join(out)


def _alerts(smtp_server: LocalSMTP) -> list[str]:
    return [
        str(message_from_bytes(m.data, policy=policy.default)["Subject"])
        for m in settled(smtp_server, 2.0)
        if ONCALL in m.rcpt_tos
    ]


def _digest_to_partner(svc: Service, smtp_server: LocalSMTP) -> tuple[str, str, str]:
    """(partner address, digest subject, digest text) of the digest just delivered."""
    queue_digests(svc, WEDNESDAY_10)
    svc.deliver(WEDNESDAY_10)
    for m in settled(smtp_server, 2.0):
        message = message_from_bytes(m.data, policy=policy.default)
        if message["X-Soudan-Intake"] == "digest":
            body = message.get_body(preferencelist=("plain",))
            assert body is not None
            text = str(body.get_content())  # type: ignore[attr-defined]
            if WORDS in text:
                return m.rcpt_tos[0], str(message["Subject"]), text
    raise AssertionError("no digest with the resident's words")


def _read(svc: Service) -> None:
    with Mailbox(svc.settings.mailbox) as mailbox:
        process_new_mail(svc, mailbox, WEDNESDAY_10, accept_existing=True)
    svc.deliver(WEDNESDAY_10)


def test_a_partners_phone_reply_rewrapping_the_digest_raises_no_second_alert(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    svc = Service.from_settings(load_settings(write_config(tmp_path, dovecot, smtp_server)))
    dovecot.append(samples.consultation(RESIDENT, "相談", WORDS))
    _read(svc)
    assert len(_alerts(smtp_server)) == 1
    partner, subject, text = _digest_to_partner(svc, smtp_server)
    body = "確認しました。明日こちらから連絡します。\n\n" + rewrap(text, 76)
    assert WORDS not in body.replace("> ", "")  # the quote was re-wrapped
    dovecot.append(samples.consultation(partner, "Re: " + subject, body))
    _read(svc)
    assert len(_alerts(smtp_server)) == 1
    with session_scope(svc.engine) as s:
        kinds = [e.kind for e in s.exec(select(Event))]
    assert STAFF_URGENT_WORDS_EVENT in kinds  # kept for staff, and said why


def test_a_partner_writing_crisis_words_of_their_own_still_alerts(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a verbatim piece of our own mail is a quote: a partner's own sentence about a
    crisis, even with the same words, alerts as anyone's would."""
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    svc = Service.from_settings(load_settings(write_config(tmp_path, dovecot, smtp_server)))
    dovecot.append(samples.consultation(RESIDENT, "相談", WORDS))
    _read(svc)
    partner, _subject, _text = _digest_to_partner(svc, smtp_server)
    own = "別の生徒から、今夜もう死にたいと電話がありました。すぐ対応をお願いします。"
    dovecot.append(samples.consultation(partner, "至急", own))
    _read(svc)
    assert len(_alerts(smtp_server)) == 2


# A crisis a partner reports in words that also stand, word for word, in a digest sent to
# them is no quote: it is not the rest of a quoted line (review rv9d F2).
@pytest.mark.parametrize(
    "own",
    [
        # a partner relays another pupil's words, on a line of their own
        "別の生徒から先ほど電話があり、泣きながらこう言っていました。\nもう死にたいです。\n"
        "折り返しをお願いします。",
        # a partner copies a resident's new mail (sent to the partner directly) into a new
        # mail; the resident repeats a sentence of the earlier mail
        "相談者さんから私宛てに直接こんなメールが来ました。\n\n昨日から何も食べていません。\n"
        "もう死にたいです。\n今から海に行きます。",
    ],
    ids=["relayed-other-pupil", "pasted-new-mail"],
)
def test_a_partners_new_crisis_report_in_words_a_digest_also_holds_still_alerts(
    own: str,
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    svc = Service.from_settings(load_settings(write_config(tmp_path, dovecot, smtp_server)))
    dovecot.append(samples.consultation(RESIDENT, "相談", WORDS))
    _read(svc)
    assert len(_alerts(smtp_server)) == 1
    partner, _subject, _text = _digest_to_partner(svc, smtp_server)
    dovecot.append(samples.consultation(partner, "至急", own))
    _read(svc)
    assert len(_alerts(smtp_server)) == 2
