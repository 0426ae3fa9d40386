"""What reaches a partner and the on-call person over real SMTP (aiosmtpd): long lines,
8-bit content and digests that fail for good.

Review rvx (findings 1 and 3): a resident's one-paragraph phone mail put a line of over
998 bytes into the digest's 8bit text part, the server answered 500, and the digest's
cases were never listed again; and every mail went out 8-bit without ``BODY=8BITMIME``.
All mail here is synthetic.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, col, select

from intake import samples
from intake.config import load_settings
from intake.digest import queue_digests
from intake.fetch import Mailbox
from intake.localservers import LocalDovecot, LocalSMTP
from intake.pipeline import Service, _queue_alert, process_new_mail
from intake.staff import show_case
from intake.store import Case, DigestEntry, Outbox, StoredMessage, session_scope, to_db
from tests.helpers import serving, write_config

JST = ZoneInfo("Asia/Tokyo")
# A weekday morning inside office hours.
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=JST)
# One paragraph typed on a phone, no line break: 400 letters, 1,200 bytes in UTF-8.
PARAGRAPH = "最近ずっとひとりで家にいて、誰とも話していません。" * 16
NO_IMAP = SimpleNamespace(host="127.0.0.1", port=1, user="intake")


def _service(tmp_path: Path, smtp: Any, extra: str = "") -> Service:
    return Service.from_settings(load_settings(write_config(tmp_path, NO_IMAP, smtp, extra=extra)))  # type: ignore[arg-type]


def _case(
    svc: Service,
    text: str,
    *,
    sender: str = "resident@example.jp",
    urgent: bool = False,
    phones: list[str] | None = None,
) -> int:
    """A processed consultation for the general desk (``city``), stored as the pipeline
    stores one; with ``urgent`` its alert is queued by the pipeline's own code."""
    key = svc.settings.mailbox.key
    with session_scope(svc.engine) as s:
        case = Case(
            mailbox=key,
            created_at=to_db(NOW),
            sender=sender,
            urgent=urgent,
            partner="city",
            topic="isolation",
            phone=json.dumps(phones or []),
            urgent_reasons=json.dumps([{"surface": "消えたい", "rule": "u1"}] if urgent else []),
        )
        s.add(case)
        s.flush()
        msg = StoredMessage(
            mailbox=key,
            sha256=uuid.uuid4().hex,
            raw=b"x",
            received_at=to_db(NOW),
            status="processed",
            case_id=case.id,
            new_text=text,
        )
        s.add(msg)
        s.flush()
        if urgent:
            _queue_alert(svc, s, case, msg, NOW, None, NOW)
        assert case.id is not None
        return case.id


def _text_of(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def _longest_line(data: bytes) -> int:
    return max(len(line) for line in data.splitlines())


def _number(svc: Service, case_id: int) -> str:
    with Session(svc.engine) as s:
        case = s.get(Case, case_id)
        assert case is not None
        return case.number


# ------------------------------------------------------------------ long lines (finding 1)


def test_a_one_paragraph_phone_mail_reaches_the_partner_intact_in_its_digest(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole way: IMAP, triage, digest, SMTP. Before: ``500 Line too long`` and the
    digest failed for good."""
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    dovecot.append(samples.consultation("one.para@example.jp", "相談", PARAGRAPH))
    svc = Service.from_settings(load_settings(write_config(tmp_path, dovecot, smtp_server)))
    now = datetime.now(JST)
    with Mailbox(svc.settings.mailbox) as mb:
        process_new_mail(svc, mb, now)
    svc.deliver(now)
    smtp_server.clear()
    queued = queue_digests(svc, now)
    assert sum(queued.values()) == 1
    report = svc.deliver(now)
    assert (report.sent, report.failed) == (1, 0)
    with Session(svc.engine) as s:
        row = s.exec(select(Outbox).where(Outbox.kind == "digest")).one()
        assert row.status == "sent", row.last_error
    (mail,) = smtp_server.wait_for(1)
    assert _longest_line(mail.data) <= 998
    assert PARAGRAPH in _text_of(mail.message, "plain")
    assert PARAGRAPH in _text_of(mail.message, "html")


def test_a_digest_text_part_keeps_8bit_unless_a_line_is_too_long(tmp_path: Path) -> None:
    """Short lines stay 8bit (readable in the relay's queue); a long one goes base64, and
    the HTML part never carries a line over 998 bytes either."""
    svc = _service(tmp_path, SimpleNamespace(host="127.0.0.1", port=1))
    _case(svc, "短い相談です。\nよろしくお願いします。")
    queue_digests(svc, NOW)
    _case(svc, PARAGRAPH)
    queue_digests(svc, NOW + timedelta(hours=5))
    with Session(svc.engine) as s:
        short, long = s.exec(select(Outbox).order_by(col(Outbox.id))).all()
    for row, cte in ((short, "8bit"), (long, "base64")):
        message = email.message_from_bytes(row.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        plain = message.get_body(preferencelist=("plain",))
        assert plain is not None and plain["Content-Transfer-Encoding"] == cte
        assert _longest_line(row.content) <= 998
    message = email.message_from_bytes(long.content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert PARAGRAPH in _text_of(message, "plain")


def test_an_alert_with_a_line_too_long_is_delivered_intact(
    tmp_path: Path, smtp_server: LocalSMTP
) -> None:
    """An alert is composed outside the digest code with the resident's phone numbers on
    one line; 70 of them made a 1,000-byte line, and the one mail that must arrive was
    refused for good. Sending re-encodes such a part."""
    phones = [f"090-{1000 + i:04d}-{2000 + i:04d}" for i in range(70)]
    svc = _service(tmp_path, smtp_server)
    _case(svc, "もう消えたい", urgent=True, phones=phones)
    with Session(svc.engine) as s:
        alert = s.exec(select(Outbox).where(Outbox.kind == "alert")).one()
    assert _longest_line(alert.content) > 998  # as composed
    report = svc.deliver(NOW)
    assert (report.sent, report.failed) == (1, 0)
    (mail,) = smtp_server.wait_for(1)
    assert _longest_line(mail.data) <= 998
    text = _text_of(mail.message, "plain")
    assert all(p in text for p in phones)
    assert mail.message["Message-ID"] == alert.message_id


def test_wire_content_changes_only_the_parts_that_need_it() -> None:
    """Pure: headers and the untouched part stay byte for byte; the re-encoded part
    decodes to the same bytes."""
    from intake.send import wire_content  # here: the other tests run on older code too

    msg = EmailMessage()
    msg["From"] = "sasaean@city.kasaoka.okayama.jp"
    msg["To"] = "desk@example.jp"
    msg["Subject"] = "【相談ダイジェスト】テスト"
    msg["Message-ID"] = "<abc.digest@city.kasaoka.okayama.jp>"
    msg.set_content(PARAGRAPH + "\n", charset="utf-8", cte="8bit")
    msg.add_alternative("<p>短い</p>\n", subtype="html", charset="utf-8")
    content = bytes(msg)
    wired = wire_content(content, eight_bit=True)
    assert _longest_line(wired) <= 998
    assert wired.split(b"\n\n", 1)[0] == content.split(b"\n\n", 1)[0]
    parsed = email.message_from_bytes(wired, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert _text_of(parsed, "plain") == PARAGRAPH + "\n"
    html = parsed.get_body(preferencelist=("html",))
    assert html is not None and html["Content-Transfer-Encoding"] == "8bit"
    # Nothing to change: the very same bytes, unparsed.
    short = EmailMessage()
    short.set_content("短い本文\n", charset="utf-8", cte="8bit")
    assert wire_content(bytes(short), eight_bit=True) == bytes(short)
    assert wire_content(bytes(short), eight_bit=False).isascii()


# ------------------------------------------------------ failed digests (finding 1, part 2)


class _RefuseFor:
    """Refuses, for good (550 at RCPT), the addresses in ``refused``; records the rest."""

    def __init__(self, refused: set[str]) -> None:
        self.refused = refused
        self.received: list[tuple[list[str], bytes]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refused:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


@pytest.fixture
def refusing() -> Iterator[tuple[_RefuseFor, SimpleNamespace]]:
    handler = _RefuseFor(set())
    with serving(handler) as srv:
        yield handler, srv


def _digests(svc: Service) -> list[Outbox]:
    with Session(svc.engine) as s:
        return list(s.exec(select(Outbox).where(Outbox.kind == "digest").order_by(col(Outbox.id))))


def test_a_digest_refused_for_good_lists_its_cases_again_once(
    tmp_path: Path,
    refusing: tuple[_RefuseFor, SimpleNamespace],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The coordinator's digest is refused for good, the general desk's delivered: the
    next run lists the case for the coordinator again and not for the desk (no
    duplicate), and the run after lists nothing. One ERROR, with no address or text."""
    handler, srv = refusing
    handler.refused = {"coordinator@example.jp"}
    svc = _service(tmp_path, srv, extra='\n[service]\ncoordinator = ["coordinator@example.jp"]\n')
    case_id = _case(svc, "誰とも話していません。", sender="lonely.resident@example.jp")
    assert queue_digests(svc, NOW) == {"city": 1, "coordinator": 1}
    with caplog.at_level(logging.DEBUG, logger="intake"):
        svc.deliver(NOW)
    first = {row.partner: row.status for row in _digests(svc)}
    assert first == {"city": "sent", "coordinator": "failed"}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].__dict__.get("kind") == "digest"
    for record in caplog.records:
        if record.levelno > logging.DEBUG:
            shown = record.getMessage() + repr(record.__dict__)
            assert "example.jp" not in shown and "誰とも" not in shown

    # Listed again for the coordinator only; the desk has it already.
    handler.refused = set()
    later = NOW + timedelta(hours=5)
    assert queue_digests(svc, later) == {"coordinator": 1}
    svc.deliver(later)
    assert [row.status for row in _digests(svc)] == ["sent", "failed", "sent"]
    assert [rcpts for rcpts, _ in handler.received] == [
        ["sasaean-desk@example.jp"],
        ["coordinator@example.jp"],
    ]
    assert queue_digests(svc, later + timedelta(days=1)) == {}

    # ``show`` says which digest failed and which reached the partner.
    shown = show_case(svc, _number(svc, case_id))
    history = shown.split("== 履歴", 1)[1]
    assert "送信失敗（ダイジェスト）" in history and "listed in the next digest" in history
    assert history.count("queued)") == 3  # city, coordinator, coordinator again
    assert history.count("送信（ダイジェスト）") == 2
    with Session(svc.engine) as s:
        entries = s.exec(select(DigestEntry).where(DigestEntry.case_id == case_id)).all()
        assert sorted(e.partner for e in entries) == ["city", "coordinator"]


def test_a_digest_given_up_after_a_day_of_4xx_lists_its_cases_again(
    tmp_path: Path, smtp_server: LocalSMTP
) -> None:
    """A relay that answers 4xx to the digest for a whole day: the row is failed as a
    5xx would be, and its case comes back."""
    svc = _service(tmp_path, smtp_server)
    _case(svc, "相談したいことがあります。")
    assert queue_digests(svc, NOW) == {"city": 1}
    smtp_server.reject_with = "451 4.3.0 try again later"
    svc.deliver(NOW)
    assert queue_digests(svc, NOW + timedelta(hours=1)) == {}  # still trying: not again
    svc.deliver(NOW + timedelta(hours=25))
    assert [row.status for row in _digests(svc)] == ["failed"]
    smtp_server.reject_with = None
    assert queue_digests(svc, NOW + timedelta(hours=26)) == {"city": 1}


# -------------------------------------------------------------------- 8BITMIME (finding 3)


class _Envelopes:
    """Records MAIL FROM options and the content; with ``refuse_body`` it refuses the
    BODY parameter, as a broken relay that advertises 8BITMIME might."""

    def __init__(self, refuse_body: bool = False) -> None:
        self.refuse_body = refuse_body
        self.seen: list[tuple[list[str], bytes]] = []
        self.mail_options: list[list[str]] = []

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        self.mail_options.append(list(mail_options))
        if self.refuse_body and any(o.upper().startswith("BODY=") for o in mail_options):
            return "555 5.5.4 BODY parameter not supported"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content
        self.seen.append((list(envelope.mail_options), content))
        return "250 OK"


def _alert_text(svc: Service) -> str:
    with Session(svc.engine) as s:
        alert = s.exec(select(Outbox).where(Outbox.kind == "alert")).one()
    message = email.message_from_bytes(alert.content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return _text_of(message, "plain")


def test_8bit_mail_is_announced_with_body_8bitmime(tmp_path: Path) -> None:
    """aiosmtpd offers 8BITMIME: the 8-bit alert goes with BODY=8BITMIME, as it is."""
    handler = _Envelopes()
    with serving(handler) as srv:
        svc = _service(tmp_path, srv)
        _case(svc, "もう消えたい", urgent=True)
        assert svc.deliver(NOW).sent == 1
    ((options, content),) = handler.seen
    assert "BODY=8BITMIME" in [o.upper() for o in options]
    assert not content.isascii()


def test_without_8bitmime_no_8bit_byte_reaches_the_server(tmp_path: Path) -> None:
    """``decode_data=True`` turns 8BITMIME off; without SMTPUTF8 this aiosmtpd refuses
    any 8-bit byte ("500 strict ASCII mode"). The alert arrives, re-encoded, same text."""
    received: list[str] = []

    class Strict:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope.content)  # str: decode_data
            return "250 OK"

    with serving(Strict(), decode_data=True, enable_SMTPUTF8=False) as srv:
        svc = _service(tmp_path, srv)
        _case(svc, "もう消えたい", urgent=True)
        report = svc.deliver(NOW)
    assert (report.sent, report.failed) == (1, 0)
    (content,) = received
    assert content.isascii()
    message = email.message_from_string(content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert _text_of(message, "plain") == _alert_text(svc)


def test_a_server_refusing_the_body_parameter_gets_the_mail_in_7_bits(tmp_path: Path) -> None:
    """It advertises 8BITMIME but answers 555 to BODY=8BITMIME: the same mail is offered
    again without it, base64, in the same session; nothing fails or waits."""
    handler = _Envelopes(refuse_body=True)
    with serving(handler) as srv:
        svc = _service(tmp_path, srv)
        _case(svc, "もう消えたい", urgent=True)
        report = svc.deliver(NOW)
    assert (report.sent, report.failed, report.deferred) == (1, 0, 0)
    assert [[o.upper() for o in opts] for opts in handler.mail_options] == [["BODY=8BITMIME"], []]
    ((options, content),) = handler.seen
    assert options == [] and content.isascii()
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert _text_of(message, "plain") == _alert_text(svc)
