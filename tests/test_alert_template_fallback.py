"""A staff-edited alert template that fails to render never stops an alert.

Review rv10a F1: a mistake in a branch of templates/oncall/urgent_alert.txt.j2 that
``check`` did not render (the night deadline, a re-notice) made every alert at night fail:
the mail was quarantined, its quarantine alert failed the same way, no alert row was
queued and nothing escalated. The alert now goes out in a built-in text and the mistake is
logged. Real Dovecot and SMTP servers; all mail synthetic.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime
from email import message_from_bytes, policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from intake import samples
from intake.compose import MARKER_HEADER
from intake.config import load_settings
from intake.escalate import escalate
from intake.fetch import Mailbox
from intake.localservers import LocalDovecot, LocalSMTP
from intake.pipeline import Service, process_new_mail
from intake.quotes import split_body
from tests.helpers import BACKUP, ONCALL, settled, write_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SATURDAY_NIGHT = datetime(2027, 1, 9, 2, 30, tzinfo=ZoneInfo("Asia/Tokyo"))


def _broken_templates(tmp_path: Path) -> Path:
    """The shipped templates with a typo'd variable in the alert's first line."""
    folder = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", folder)
    alert = folder / "oncall" / "urgent_alert.txt.j2"
    text = alert.read_text(encoding="utf-8")
    alert.write_text(text.replace("受付番号: {{ case.number }}", "受付番号: {{ case.numbr }}"))
    assert "case.numbr" in alert.read_text(encoding="utf-8")
    return folder


def _alerts(smtp: LocalSMTP, to: str) -> list[str]:
    out = []
    for m in settled(smtp, 2.0):
        message = message_from_bytes(m.data, policy=policy.default)
        if to in m.rcpt_tos and message[MARKER_HEADER] == "alert":
            body = message.get_body(preferencelist=("plain",))
            assert body is not None
            out.append(str(body.get_content()))  # type: ignore[attr-defined]
    return out


def test_an_alert_template_that_fails_still_alerts_in_the_built_in_text(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    folder = _broken_templates(tmp_path)
    config = write_config(
        tmp_path, dovecot, smtp_server, extra=f'\n[service]\ntemplates_dir = "{folder}"\n'
    )
    svc = Service.from_settings(load_settings(config))
    try:
        dovecot.append(
            samples.consultation("u@example.jp", "相談", "もう消えたいです。今夜死にます。")
        )
        with caplog.at_level(logging.ERROR), Mailbox(svc.settings.mailbox) as mailbox:
            report = process_new_mail(svc, mailbox, SATURDAY_NIGHT, accept_existing=True)
        svc.deliver(SATURDAY_NIGHT)
        assert report.quarantined == 0
        (text,) = _alerts(smtp_server, ONCALL)
        assert "受付番号: C" in text and "緊急と判断した理由:" in text
        assert "もう消えたいです" not in text  # the built-in text keeps the mail's words out
        assert any("alert template" in r.getMessage() for r in caplog.records)
        # our own alert quoted back is still known as ours
        assert split_body("対応します。\n\n" + text).new == "対応します。"
        # and nobody acknowledged: the escalation goes out too, in the same built-in text
        later = SATURDAY_NIGHT.replace(hour=3, minute=30)
        escalate(svc, later)
        svc.deliver(later)
        assert any("再通知" in t for t in _alerts(smtp_server, BACKUP))
    finally:
        svc.close()


def test_check_still_reports_the_broken_alert_template(tmp_path: Path) -> None:
    """The fallback is for the running service only: ``check`` must still fail on it."""
    from intake.check import _template_problems
    from intake.partners import load_directory

    folder = _broken_templates(tmp_path)
    directory = load_directory(ROOT / "rules" / "partners.toml")
    problems = _template_problems(folder, directory)
    assert any("urgent_alert" in p for p in problems), problems
    assert _template_problems(ROOT / "templates", directory) == []


def test_a_digest_template_that_fails_still_sends_every_partners_digest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Review rv10a F1b: a typo in the digest's sender line (shown only to partners with
    show_sender) stopped every partner's digest, the others' too."""
    from intake.digest import queue_digests
    from intake.store import Outbox, session_scope
    from tests.helpers import offline_service
    from tests.test_digest_stranded import _case_of

    folder = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", folder)
    digest = folder / "partner" / "digest.txt.j2"
    text = digest.read_text(encoding="utf-8")
    digest.write_text(text.replace("送信者: {{ e.sender }}", "送信者: {{ e.sendr }}"))
    assert "e.sendr" in digest.read_text(encoding="utf-8")
    svc = offline_service(tmp_path, extra=f'\n[service]\ntemplates_dir = "{folder}"\n')
    try:
        _case_of(svc, "city", "誰とも話していません。")
        _case_of(svc, "genki", "食べるものがありません。")
        with caplog.at_level(logging.ERROR):
            queued = queue_digests(svc, SATURDAY_NIGHT.replace(hour=14))
        assert queued == {"city": 1, "genki": 1}
        assert any("digest template failed" in r.getMessage() for r in caplog.records)
        with session_scope(svc.engine) as s:
            rows = {r.partner: r for r in s.exec(select(Outbox)) if r.kind == "digest"}
        city = message_from_bytes(rows["city"].content, policy=policy.default)
        body = city.get_body(preferencelist=("plain",))
        assert body is not None
        plain = str(body.get_content())  # type: ignore[attr-defined]
        assert "前回のお知らせ以降に届いた相談 1 件" in plain and "誰とも話していません。" in plain
        # quoted back, its entries are known as ours (the marker line is kept)
        assert "誰とも話していません" not in split_body("確認しました。\n\n" + plain).new
    finally:
        svc.engine.dispose()


def test_a_quarantined_mails_alert_in_the_built_in_text_says_it_could_not_be_read(
    tmp_path: Path,
) -> None:
    """Review rv10c R6: the built-in text read like an ordinary urgent case and gave the
    bare 'python service.py show'."""
    from intake.compose import Sender, render_alert, template_environment

    env = template_environment(_broken_templates(tmp_path))
    case = {
        "number": "C000001",
        "received": SATURDAY_NIGHT,
        "callback_due": SATURDAY_NIGHT,
        "partner_name": "総合窓口",
        "sender": "x@example.jp",
        "phones": [],
        "reasons": [],
        "automatic": "quarantined",
        "ack_command": "/opt/x/python /opt/x/service.py ack C000001 --config /etc/x.toml",
        "show_command": "/opt/x/python /opt/x/service.py show C000001 --config /etc/x.toml",
    }
    msg = render_alert(
        env,
        sender=Sender("sasaean@city.kasaoka.okayama.jp", "x"),
        to=[ONCALL],
        case=case,
        now=SATURDAY_NIGHT,
        tz=ZoneInfo("Asia/Tokyo"),
        fallback=True,
    )
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    text = str(body.get_content())  # type: ignore[attr-defined]
    assert "メールを自動で読み取れませんでした" in text and "緊急と判断した理由" not in text
    assert "service.py show C000001 --config /etc/x.toml" in text
    assert "python service.py show" not in text
