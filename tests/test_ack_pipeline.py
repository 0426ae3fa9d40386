"""Through the pipeline (real Dovecot and aiosmtpd): the acknowledgement follows the mail's
language and the configured digest times (review rvx findings 2 and 5). The service's
clock is set weeks after the mail arrived, so ``accept_existing`` (a first read of an old
folder otherwise does not acknowledge: tests/test_worker_ops.py)."""

from __future__ import annotations

from datetime import datetime
from email import message_from_bytes, policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from intake import samples
from intake.config import load_settings
from intake.fetch import Mailbox
from intake.localservers import LocalDovecot, LocalSMTP
from intake.pipeline import Service, process_new_mail
from tests.helpers import write_config

JST = ZoneInfo("Asia/Tokyo")


def acks_by_sender(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, extra: str, now: datetime
) -> dict[str, str]:
    cfg = write_config(tmp_path, dovecot, smtp_server, extra=extra)
    dovecot.append_many(
        [
            samples.consultation(
                "en.resident@example.jp",
                "question",
                "Hello, I am a student. Can I talk to someone about my part-time job?",
            ),
            samples.consultation("ja.resident@example.jp", "相談", "バイト先のことで相談です。"),
        ]
    )
    svc = Service.from_settings(load_settings(cfg))
    with Mailbox(svc.settings.mailbox) as mailbox:
        process_new_mail(svc, mailbox, now, accept_existing=True)
    svc.deliver(now)
    out: dict[str, str] = {}
    for mail in smtp_server.wait_for(2, timeout=20):
        msg = message_from_bytes(mail.data, policy=policy.default)
        body = msg.get_body(preferencelist=("plain",))
        out[mail.rcpt_tos[0]] = body.get_content() if body is not None else ""
    return out


@pytest.fixture(autouse=True)
def _password(dovecot: LocalDovecot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)


WEDNESDAY_10 = datetime(2027, 1, 6, 10, 0, tzinfo=JST)  # read by the service on a business day


def test_a_mail_in_english_gets_the_english_block_and_a_japanese_one_does_not(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP
) -> None:
    acks = acks_by_sender(tmp_path, dovecot, smtp_server, "", WEDNESDAY_10)
    assert "We received your email." in acks["en.resident@example.jp"]
    assert "We received your email." not in acks["ja.resident@example.jp"]
    assert "本日（1月6日）16時30分ごろまでに" in acks["ja.resident@example.jp"]


def test_the_configured_digest_times_decide_the_promise(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP
) -> None:
    acks = acks_by_sender(
        tmp_path, dovecot, smtp_server, '[service]\ndigest_times = ["09:00"]\n', WEDNESDAY_10
    )
    for text in acks.values():
        assert "本日" not in text
        assert "1月7日(木)のお昼ごろまでに、担当の者がこのメールにお返事します。" in text
