"""Several mailboxes (municipalities) in one deployment share a database, nothing else.

Each has its own config, rules directory and partner directory; no digest, case list or
report of one mailbox may contain another's case.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from intake import samples
from intake.config import PROJECT_ROOT, load_settings
from intake.digest import queue_digests
from intake.fetch import Mailbox
from intake.localservers import LocalDovecot, LocalSMTP
from intake.pipeline import Service, process_new_mail
from intake.report import monthly_report
from intake.staff import CaseFilter, list_cases
from tests.helpers import settled, write_config

pytestmark = pytest.mark.integration


def tenant(
    tmp_path: Path,
    name: str,
    imap: LocalDovecot,
    smtp: LocalSMTP,
    db: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Service:
    home = tmp_path / name
    home.mkdir()
    rules = home / "rules"
    shutil.copytree(PROJECT_ROOT / "rules", rules)
    partners = rules / "partners.toml"
    partners.write_text(
        partners.read_text(encoding="utf-8").replace("@example.jp", f"@{name}.example.jp"),
        encoding="utf-8",
    )
    env = f"PW_{name.upper()}"
    monkeypatch.setenv(env, imap.password)
    config = write_config(
        home, imap, smtp, password_env=env, extra=f'\n[service]\nrules_dir = "{rules}"\n'
    )
    text = config.read_text(encoding="utf-8")
    text = text.replace(
        f"sqlite:///{(home / 'intake.db').as_posix()}", f"sqlite:///{db.as_posix()}"
    )
    config.write_text(text, encoding="utf-8")
    return Service.from_settings(load_settings(config))


def test_two_mailboxes_share_a_database_and_see_only_their_own_cases(
    tmp_path: Path,
    dovecot_factory: Callable[..., LocalDovecot],
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = tmp_path / "shared.db"
    imap_a, imap_b = dovecot_factory(user="kasaoka"), dovecot_factory(user="ibara")
    a = tenant(tmp_path, "kasaoka", imap_a, smtp_server, db, monkeypatch)
    b = tenant(tmp_path, "ibara", imap_b, smtp_server, db, monkeypatch)
    assert a.settings.mailbox.key != b.settings.mailbox.key
    imap_a.append(samples.consultation("a1@example.jp", "相談", "学校でいじめられています"))
    imap_a.append(samples.consultation("a2@example.jp", "相談", "友達がいなくて寂しい"))
    imap_b.append(samples.consultation("b1@example.jp", "相談", "クラスで無視されていじめられる"))
    now = datetime.now(a.calendar.tz)
    for svc in (a, b):
        with Mailbox(svc.settings.mailbox) as mailbox:
            process_new_mail(svc, mailbox, now)
        svc.deliver(now)
    smtp_server.wait_for(3, timeout=10)
    smtp_server.clear()

    numbers_a = sorted(r.number for r in list_cases(a, CaseFilter()))
    numbers_b = sorted(r.number for r in list_cases(b, CaseFilter()))
    assert len(numbers_a) == 2 and len(numbers_b) == 1
    assert not set(numbers_a) & set(numbers_b)

    for svc in (a, b):
        queue_digests(svc, now)
        svc.deliver(now)
    mails = settled(smtp_server, 1.0)
    for mail in mails:
        body = mail.message.get_body(("plain",)).get_content()
        domain = mail.rcpt_tos[0].rpartition("@")[2]
        if domain.startswith("kasaoka"):
            assert "b1@" not in body
        else:
            assert domain.startswith("ibara") and "a1@" not in body and "a2@" not in body
    assert {m.rcpt_tos[0].rpartition("@")[2] for m in mails} == {
        "kasaoka.example.jp",
        "ibara.example.jp",
    }

    month = now.strftime("%Y-%m")
    assert monthly_report(a, month).cases == 2
    assert monthly_report(b, month).cases == 1
