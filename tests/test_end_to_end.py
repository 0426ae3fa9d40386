"""The whole flow against a real Dovecot and a real SMTP server.

Mail is put in the mailbox with IMAP APPEND; the service runs through its command line
(`once`, `digest`) as an operator would run it; assertions are on what the SMTP server
actually received.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from intake import samples
from intake.localservers import LocalDovecot, LocalSMTP, ReceivedMail
from tests.helpers import ONCALL, OWN, settled, write_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def run_service(*args: str, config: Path, password: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TEST_IMAP_PASSWORD": password}
    return subprocess.run(
        [sys.executable, str(ROOT / "service.py"), *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=ROOT,
    )


def text_of(mail: ReceivedMail) -> str:
    msg: EmailMessage = mail.message
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def to(mails: list[ReceivedMail], address: str) -> list[ReceivedMail]:
    return [m for m in mails if address in m.rcpt_tos]


@pytest.fixture
def mailbox_with_consultations(dovecot: LocalDovecot) -> dict[str, bytes]:
    mails = {
        "bullying": samples.consultation(
            "hanako.test@example.jp",
            "相談です",
            "学校でいじめられています。クラスで無視されて、毎日つらいです。",
            charset="iso-2022-jp",
            name="山田花子",
        ),
        "poverty": samples.consultation(
            "taro.test@example.jp",
            "お金のこと",
            "バイトを切られて家賃が払えんようになりました。食費も足りません。",
            charset="shift_jis",
        ),
        "urgent": samples.carrier_mail(
            "sora..test.@docomo.ne.jp",
            "話を聞いてほしい",
            "最近ずっと眠れなくて、もう消えたいと思ってしまいます。\n電話は０９０−１２３４−５６７８です。",
        ),
        "autoreply": samples.consultation(
            "away.test@example.jp",
            "自動応答: 不在",
            "ただいま不在にしております。",
            headers={"Auto-Submitted": "auto-replied"},
        ),
        "bounce": samples.bounce("nobody.test@example.jp"),
        "urgent_list": samples.consultation(
            "list.test@example.jp",
            "[ml:12] 転送",
            "死にたいです。もう限界です。",
            headers={"List-Id": "<ml.example.jp>", "Precedence": "list"},
        ),
    }
    for raw in mails.values():
        dovecot.append(raw)
    return mails


def test_once_acknowledges_alerts_and_second_once_sends_nothing(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    mailbox_with_consultations: dict[str, bytes],
) -> None:
    config = write_config(tmp_path, dovecot, smtp_server)
    first = run_service("once", config=config, password=dovecot.password)
    assert first.returncode == 0, first.stderr
    # 3 acknowledgements (bullying, poverty, urgent) + 2 alerts (urgent, urgent list mail)
    mails = smtp_server.wait_for(5, timeout=20)
    assert len(mails) == 5, [m.rcpt_tos for m in mails]

    for sender in ("hanako.test@example.jp", "taro.test@example.jp", "sora..test.@docomo.ne.jp"):
        acks = to(mails, sender)
        assert len(acks) == 1, sender
    for silent in ("away.test@example.jp", "nobody.test@example.jp", "list.test@example.jp"):
        assert to(mails, silent) == [], silent

    alerts = to(mails, ONCALL)
    assert len(alerts) == 2
    alert_texts = [text_of(m) for m in alerts]
    carrier_alert = next(t for t in alert_texts if "sora..test.@docomo.ne.jp" in t)
    assert "消えたい" in carrier_alert
    assert "090-1234-5678" in carrier_alert
    assert "受付番号: C" in carrier_alert
    assert re.search(r"受信日時: \d{1,2}月\d{1,2}日\(.\) \d\d:\d\d", carrier_alert)
    list_alert = next(t for t in alert_texts if "list.test@example.jp" in t)
    assert "死にたい" in list_alert

    second = run_service("once", config=config, password=dovecot.password)
    assert second.returncode == 0, second.stderr
    assert "fetched 0" in second.stdout
    assert len(settled(smtp_server)) == 5


def test_acknowledgement_is_a_neutral_reply_with_hotlines(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    mailbox_with_consultations: dict[str, bytes],
) -> None:
    config = write_config(tmp_path, dovecot, smtp_server)
    assert run_service("once", config=config, password=dovecot.password).returncode == 0
    mails = smtp_server.wait_for(5, timeout=20)
    ack = to(mails, "hanako.test@example.jp")[0]
    msg = ack.message
    original = mailbox_with_consultations["bullying"]
    original_id = next(
        line.split(b":", 1)[1].strip()
        for line in original.splitlines()
        if line.lower().startswith(b"message-id:")
    ).decode()
    assert msg["In-Reply-To"] == original_id
    assert original_id in msg["References"]
    assert msg["Auto-Submitted"] == "auto-replied"
    assert ack.mail_from == OWN
    # Neutral: nothing of the topic or the resident's words in the subject or first lines.
    subject = str(msg["Subject"])
    text = text_of(ack)
    opening = "\n".join(text.splitlines()[:3])
    for word in ("いじめ", "相談です", "無視", "学校"):
        assert word not in subject and word not in opening
    # The seed's phone lines, the 24-hour line and 110/119 are always there.
    for number in ("0865-63-8515", "0865-63-4955", "0865-63-0911", "110", "119"):
        assert number in text
    assert "24時間" in text


def test_digest_lists_each_partners_cases_once(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    mailbox_with_consultations: dict[str, bytes],
) -> None:
    config = write_config(tmp_path, dovecot, smtp_server)
    assert run_service("once", config=config, password=dovecot.password).returncode == 0
    smtp_server.wait_for(5, timeout=20)
    smtp_server.clear()
    result = run_service("digest", config=config, password=dovecot.password)
    assert result.returncode == 0, result.stderr
    mails = smtp_server.wait_for(3, timeout=20)
    by_partner = {m.rcpt_tos[0]: m for m in mails}
    assert set(by_partner) == {
        "sasaean-desk@example.jp",
        "harmony-digest@example.jp",
        "genki-digest@example.jp",
    }
    harmony = text_of(by_partner["harmony-digest@example.jp"])
    assert "いじめ" in harmony and harmony.count("受付番号:") == 1
    assert "hanako.test@example.jp" not in harmony  # show_sender = false for this partner
    genki = text_of(by_partner["genki-digest@example.jp"])
    assert "生活困窮" in genki and genki.count("受付番号:") == 1
    city = text_of(by_partner["sasaean-desk@example.jp"])
    assert "緊急: はい" in city  # the urgent isolation case
    assert by_partner["sasaean-desk@example.jp"].message.get_body(("html",)) is not None

    smtp_server.clear()
    again = run_service("digest", config=config, password=dovecot.password)
    assert again.returncode == 0
    assert "no new cases" in again.stdout
    assert settled(smtp_server) == []


def test_garbled_oversized_and_valid_mail_all_become_cases(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP
) -> None:
    """Undecodable and oversized mail is stored raw, flagged, routed to a human and acked."""
    import random

    rng = random.Random(3)
    garbage = bytes(rng.randrange(0x80, 0x100) for _ in range(600))
    garbled = (
        b"From: garbled@example.jp\r\nTo: sasaean@city.kasaoka.okayama.jp\r\n"
        b"Subject: \xff\xfe\x80\x81\r\nMessage-ID: <garbled-1@example.jp>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + garbage + b"\r\n"
    )
    oversized = samples.consultation(
        "big@example.jp", "写真を送ります", "相談です。\n" + "あ" * 700_000
    )
    assert len(oversized) > 1024 * 1024
    valid = samples.consultation("valid@example.jp", "相談", "友達がいなくて寂しいです。")
    dovecot.append_many([garbled, oversized, valid])
    config = write_config(tmp_path, dovecot, smtp_server, extra="\n[service]\nmax_message_mb = 1\n")
    result = run_service("once", config=config, password=dovecot.password)
    assert result.returncode == 0, result.stderr
    assert "cases 3" in result.stdout, result.stdout
    mails = smtp_server.wait_for(3, timeout=20)
    assert sorted(m.rcpt_tos[0] for m in mails) == [
        "big@example.jp",
        "garbled@example.jp",
        "valid@example.jp",
    ]

    import sqlite3

    db = sqlite3.connect(tmp_path / "intake.db")
    rows = db.execute(
        "SELECT m.from_addr, m.problems, length(m.raw), c.needs_human, c.partner "
        'FROM message m JOIN "case" c ON c.id = m.case_id ORDER BY m.id'
    ).fetchall()
    db.close()
    by_sender = {r[0]: r for r in rows}
    assert by_sender["garbled@example.jp"][3] == 1 and by_sender["garbled@example.jp"][4] == "city"
    assert "undecodable" in by_sender["garbled@example.jp"][1]
    assert "oversized" in by_sender["big@example.jp"][1]
    assert by_sender["big@example.jp"][2] == len(oversized.replace(b"\n", b"\r\n"))  # whole
    assert by_sender["big@example.jp"][3] == 1
    assert by_sender["valid@example.jp"][3] == 0 and by_sender["valid@example.jp"][1] == "[]"


def test_coordinator_overview_lists_every_case_in_full(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    mailbox_with_consultations: dict[str, bytes],
) -> None:
    config = write_config(
        tmp_path,
        dovecot,
        smtp_server,
        extra='\n[service]\ncoordinator = ["coordinator@example.jp"]\n',
    )
    assert run_service("once", config=config, password=dovecot.password).returncode == 0
    smtp_server.wait_for(5, timeout=20)
    smtp_server.clear()
    assert run_service("digest", config=config, password=dovecot.password).returncode == 0
    mails = smtp_server.wait_for(4, timeout=20)
    overview = next(m for m in mails if m.rcpt_tos == ["coordinator@example.jp"])
    text = text_of(overview)
    assert text.count("受付番号:") == 6  # every case, whichever partner owns it
    assert "hanako.test@example.jp" in text  # the city sees senders


def test_skip_existing_leaves_old_mail_to_staff_and_reads_only_new_mail(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP
) -> None:
    """Installed on a mailbox staff have been answering by hand: `skip-existing` before the
    first run means no late acknowledgement and no alert for the old mail (it stays in the
    folder), while mail that arrives afterwards is handled as always. It refuses once the
    service has read the mailbox, so it can never skip mail that came in while running."""
    config = write_config(tmp_path, dovecot, smtp_server)
    for i in range(3):
        dovecot.append(
            samples.consultation(f"old{i}.test@example.jp", "相談", "もう死にたいです。")
        )
    skipped = run_service("skip-existing", config=config, password=dovecot.password)
    assert skipped.returncode == 0, skipped.stderr
    assert "left 3 mail(s)" in skipped.stdout
    new = samples.consultation("new.test@example.jp", "相談", "一人暮らしで話し相手がいません。")
    dovecot.append(new)
    once = run_service("once", config=config, password=dovecot.password)
    assert once.returncode == 0, once.stderr
    assert "cases 1," in once.stdout
    received = settled(smtp_server, 1.0)
    assert [r for m in received for r in m.rcpt_tos] == ["new.test@example.jp"]
    with dovecot.connect() as client:
        client.select_folder("INBOX", readonly=True)
        assert len(client.search(["ALL"])) == 4  # the old mail is still there, for staff
    again = run_service("skip-existing", config=config, password=dovecot.password)
    assert again.returncode == 2
    assert "only before the first run" in again.stderr
    # The folder restored under a new UIDVALIDITY: read again, but the skipped mail is
    # recognised (hash-only rows) like the stored one: no late acknowledgement, no alert.
    dovecot.recreate_mailbox()
    rescan = run_service("once", config=config, password=dovecot.password)
    assert rescan.returncode == 0, rescan.stderr
    assert "fetched 4," in rescan.stdout and "cases 0," in rescan.stdout
    assert "acks queued 0, alerts queued 0" in rescan.stdout
    assert len(settled(smtp_server, 1.0)) == 1


def test_skip_existing_is_refused_after_a_first_poll_of_an_empty_folder(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP
) -> None:
    """A first `once` on an empty folder (a folder of its own, day one) already means the
    service is running: a mail that arrives afterwards must never be skipped."""
    config = write_config(tmp_path, dovecot, smtp_server)
    first = run_service("once", config=config, password=dovecot.password)
    assert first.returncode == 0, first.stderr
    dovecot.append(samples.consultation("later.test@example.jp", "相談", "もう死にたいです。"))
    skipped = run_service("skip-existing", config=config, password=dovecot.password)
    assert skipped.returncode == 2
    assert "only before the first run" in skipped.stderr
    once = run_service("once", config=config, password=dovecot.password)
    assert "cases 1," in once.stdout and "alerts queued 1" in once.stdout


def test_skip_existing_is_refused_with_move_to_and_moves_nothing(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP
) -> None:
    """With housekeeping on, the mail left to staff would be moved out at the first poll."""
    config = write_config(tmp_path, dovecot, smtp_server)
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "poll_interval = 1", 'poll_interval = 1\nmove_to = "Done"'
        ),
        encoding="utf-8",
    )
    dovecot.append(samples.consultation("old.test@example.jp", "相談", "話を聞いてほしいです。"))
    skipped = run_service("skip-existing", config=config, password=dovecot.password)
    assert skipped.returncode == 2
    assert "move_to" in skipped.stderr
    with dovecot.connect() as client:
        assert not client.folder_exists("Done")
        client.select_folder("INBOX", readonly=True)
        assert len(client.search(["ALL"])) == 1
