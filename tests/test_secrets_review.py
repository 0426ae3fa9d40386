"""Passwords never reach a log line, and an unreadable one never stops the mail (rv9b F1).

Synthetic passwords only; the IMAP test logs in to a real Dovecot.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from intake.config import Secret, load_settings
from intake.errors import ConfigError
from intake.fetch import Mailbox
from intake.localservers import LocalDovecot, LocalSMTP
from intake.logs import JsonFormatter, PlainFormatter
from intake.send import deliver_outbox
from intake.store import Outbox, open_database, session_scope
from tests.helpers import write_config

SECRET = "S3CRET\u00a7PASSWORD"


def _logged(exc: BaseException) -> list[str]:
    try:
        raise exc
    except type(exc):
        record = logging.getLogger("intake.test").makeRecord(
            "intake.test", logging.CRITICAL, __file__, 1, "stopped", (), sys.exc_info()
        )
    return [PlainFormatter().format(record), JsonFormatter().format(record)]


def test_an_encoding_error_is_logged_without_the_text_it_failed_on() -> None:
    decode = UnicodeDecodeError("utf-8", SECRET.encode("latin-1"), 6, 7, "invalid start byte")
    encode = UnicodeEncodeError("ascii", SECRET, 6, 7, "ordinal not in range(128)")
    for line in _logged(decode) + _logged(encode):
        assert "S3CRET" not in line and "PASSWORD" not in line
        assert "Unicode" in line and "position=6" in line  # still says what and where


def test_a_password_file_that_is_not_utf8_is_a_config_error_without_the_password(
    tmp_path: Path,
) -> None:
    path = tmp_path / "imap-password"
    path.write_bytes(SECRET.encode("latin-1"))
    path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        Secret(file=path).get()
    text = f"{caught.value} {caught.value!r} {caught.value.__cause__!r}"
    assert "S3CRET" not in text and "not UTF-8" in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.integration
def test_a_non_ascii_imap_password_logs_in(
    tmp_path: Path, dovecot_factory, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOGIN quotes ASCII only: imaplib raised UnicodeEncodeError (its repr, the password,
    was logged at CRITICAL on every restart); AUTHENTICATE PLAIN carries UTF-8."""
    server: LocalDovecot = dovecot_factory(password="pässwörd-\u00e9t\u00e9-2026")
    server.append(b"From: a@example.jp\r\nSubject: test\r\n\r\nhello\r\n")
    monkeypatch.setenv("TEST_IMAP_PASSWORD", server.password)
    settings = load_settings(write_config(tmp_path, server, smtp_server))
    with Mailbox(settings.mailbox) as mailbox:
        assert mailbox.client is not None
        assert len(mailbox.client.search("ALL")) == 1


@pytest.mark.integration
def test_an_unreadable_smtp_password_defers_the_mail_and_names_only_the_file(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The delivery run died with the UnicodeDecodeError (logged with the password every
    30 s, nothing ever sent, the rows not even tried); now the run defers its rows."""
    password = tmp_path / "smtp-password"
    password.write_bytes(SECRET.encode("latin-1"))
    password.chmod(0o600)
    config = write_config(tmp_path, dovecot, smtp_server)
    text = config.read_text(encoding="utf-8").replace(
        "timeout = 10\n\n[database]",
        f'timeout = 10\nusername = "intake"\npassword_file = "{password}"\n\n[database]',
    )
    config.write_text(text, encoding="utf-8")
    settings = load_settings(config)
    assert settings.smtp.username == "intake"
    engine = open_database(settings.database_url)
    with session_scope(engine) as s:
        s.add(
            Outbox(
                mailbox=settings.mailbox.key,
                kind="alert",
                dedupe_key="alert:1",
                recipients='["oncall@example.jp"]',
                message_id="<a1@example.jp>",
                content=b"Subject: x\r\n\r\nx\r\n",
                status="queued",
            )
        )
    with caplog.at_level(logging.INFO):
        report = deliver_outbox(settings.smtp, engine, datetime.now(UTC))
    assert report.sent == 0 and report.deferred == 1
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert "S3CRET" not in logged and "smtp-password" in logged
    with session_scope(engine) as s:
        assert [row.status for row in s.exec(select(Outbox))] == ["queued"]


def test_check_names_a_password_file_that_is_not_utf8(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP
) -> None:
    from intake.check import run_checks

    password = tmp_path / "imap-password"
    password.write_bytes(SECRET.encode("latin-1"))
    password.chmod(0o600)
    config = write_config(tmp_path, dovecot, smtp_server)
    text = config.read_text(encoding="utf-8").replace(
        'password_env = "TEST_IMAP_PASSWORD"', f'password_file = "{password}"'
    )
    config.write_text(text, encoding="utf-8")
    problems = [str(p) for p in run_checks(config, None)]
    assert any("mailbox.password_file" in p and "not UTF-8" in p for p in problems), problems
    assert not any("S3CRET" in p for p in problems)
