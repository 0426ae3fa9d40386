"""What the log says when the mail server cannot be reached while an alert waits.

Review rv10a F7: a wrong [smtp] port was logged every 30 s as "WARNING smtp unavailable:
SMTPConnectError" only, with no server, port or fix, while an urgent alert sat in the
outbox. Real Dovecot; the SMTP port is one nobody listens on. All mail synthetic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from intake import samples
from intake.config import load_settings
from intake.fetch import Mailbox
from intake.localservers import LocalDovecot
from intake.pipeline import Service, process_new_mail
from tests.helpers import relay_down, write_config

pytestmark = pytest.mark.integration

NIGHT = datetime(2027, 1, 9, 2, 30, tzinfo=ZoneInfo("Asia/Tokyo"))


@pytest.fixture
def nowhere() -> Iterator[SimpleNamespace]:
    """A relay address that refuses connections for the whole test (see ``relay_down``)."""
    with relay_down() as address:
        yield address


def _service(
    tmp_path: Path,
    dovecot: LocalDovecot,
    monkeypatch: pytest.MonkeyPatch,
    nowhere: SimpleNamespace,
) -> Service:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    return Service.from_settings(load_settings(write_config(tmp_path, dovecot, nowhere)))  # type: ignore[arg-type]


def _smtp_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "smtp unavailable" in r.getMessage()]


def test_an_unreachable_mail_server_with_an_alert_waiting_is_an_error_naming_it(
    tmp_path: Path,
    dovecot: LocalDovecot,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    nowhere: SimpleNamespace,
) -> None:
    svc = _service(tmp_path, dovecot, monkeypatch, nowhere)
    try:
        dovecot.append(
            samples.consultation("u@example.jp", "相談", "もう死にたい。今夜終わりにします。")
        )
        with Mailbox(svc.settings.mailbox) as mailbox:
            process_new_mail(svc, mailbox, NIGHT, accept_existing=True)
        with caplog.at_level(logging.WARNING):
            svc.deliver(NIGHT)
        (record,) = _smtp_lines(caplog)
        port = svc.settings.smtp.port
        assert record.levelno == logging.ERROR
        assert f"127.0.0.1:{port}" in record.getMessage()
        assert "check [smtp] host, port and security" in record.getMessage()
        assert "urgent alerts are waiting" in record.getMessage()
        assert "死にたい" not in caplog.text
    finally:
        svc.close()


def test_an_unreachable_mail_server_with_only_acknowledgements_waiting_is_a_warning(
    tmp_path: Path,
    dovecot: LocalDovecot,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    nowhere: SimpleNamespace,
) -> None:
    svc = _service(tmp_path, dovecot, monkeypatch, nowhere)
    try:
        dovecot.append(
            samples.consultation("u@example.jp", "相談", "部活の人間関係で悩んでいます。")
        )
        with Mailbox(svc.settings.mailbox) as mailbox:
            process_new_mail(svc, mailbox, NIGHT, accept_existing=True)
        with caplog.at_level(logging.WARNING):
            svc.deliver(NIGHT)
        (record,) = _smtp_lines(caplog)
        assert record.levelno == logging.WARNING
        assert f"127.0.0.1:{svc.settings.smtp.port}" in record.getMessage()
    finally:
        svc.close()
