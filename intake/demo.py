"""``service.py demo``: the whole service on local defaults, in one command.

Starts a private Dovecot and a recording SMTP server on loopback, puts synthetic sample
consultations in the mailbox, runs ``once`` and ``digest`` exactly as production would,
and prints what went out. Nothing leaves the machine; state lives in ``--state``.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

from intake import samples
from intake.config import load_settings
from intake.digest import queue_digests
from intake.fetch import Mailbox
from intake.localservers import LocalDovecot, LocalSMTP, dovecot_binary
from intake.pipeline import Service, process_new_mail

PASSWORD_ENV = "INTAKE_DEMO_IMAP_PASSWORD"


def _config(state: Path, imap: LocalDovecot, smtp: LocalSMTP) -> Path:
    path = state / "demo.toml"
    path.write_text(
        f"""# Written by `service.py demo`: local servers only.
[mailbox]
host = "{imap.host}"
port = {imap.port}
security = "plain"   # allowed only because the host is loopback
username = "{imap.user}"
password_env = "{PASSWORD_ENV}"

[smtp]
host = "{smtp.host}"
port = {smtp.port}
security = "plain"
from_address = "sasaean@city.kasaoka.okayama.jp"
from_name = "笠岡市 ささえ愛相談窓口"

[database]
url = "sqlite:///{(state / "intake.db").as_posix()}"

[oncall]
to = ["oncall@example.jp"]
backup = ["oncall-backup@example.jp"]
""",
        encoding="utf-8",
    )
    return path


def _show(title: str, smtp: LocalSMTP, count: int) -> None:
    mails = smtp.wait_for(count, timeout=15)
    print(f"\n=== {title}: {len(mails)} mail(s) received by the local SMTP server ===")
    for mail in mails:
        msg = mail.message
        body = msg.get_body(preferencelist=("plain",))
        text = str(body.get_content()) if body is not None else ""
        print(f"\n--- To: {', '.join(mail.rcpt_tos)}\n    Subject: {msg['Subject']}")
        for line in text.strip().splitlines()[:12]:
            print(f"    | {line}")
    smtp.clear()


def run_demo(state: Path) -> int:
    if dovecot_binary() is None:
        print(
            "Dovecot is not installed. Install it first: sudo apt-get install dovecot-imapd "
            "(or run `make demo`, which does)."
        )
        return 2
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True)
    with LocalDovecot(state) as imap, LocalSMTP() as smtp:
        os.environ[PASSWORD_ENV] = imap.password
        mails = samples.demo_mails()
        imap.append_many(mails)
        print(
            f"Local Dovecot on {imap.host}:{imap.port} with {len(mails)} sample mails; "
            f"SMTP sink on {smtp.host}:{smtp.port}; state in {state}"
        )
        settings = load_settings(_config(state, imap, smtp))
        svc = Service.from_settings(settings)
        now = datetime.now(svc.calendar.tz)
        with Mailbox(settings.mailbox) as mailbox:
            report = process_new_mail(svc, mailbox, now)
        sent = svc.deliver(now)
        print(
            f"\nonce: fetched {report.fetched}, cases {report.cases}, acks {report.acks}, "
            f"alerts {report.alerts}, not acknowledged {report.suppressed}; sent {sent.sent}"
        )
        _show("acknowledgements and alerts", smtp, sent.sent)
        queued = queue_digests(svc, now)
        sent = svc.deliver(now)
        print(f"\ndigest: {queued}")
        _show("partner digests", smtp, sent.sent)
    print(f"\nDone. The database is {state / 'intake.db'}; run again for a fresh demo.")
    return 0
