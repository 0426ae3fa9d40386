"""`service.py once` tells cron when an urgent mail is still undelivered after its pass.

`once` runs from cron, and cron only tells the administrator about a run that exits
non-zero or prints something. An alert deferred because the mail server is down used to
end in exit 0: the on-call person heard nothing and neither did the administrator. Each
test runs the real command against a real Dovecot and a real aiosmtpd server on
127.0.0.1; the "fetched ..." and "sent ..." lines external tools parse stay as they were.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from intake import samples
from intake.localservers import LocalDovecot, LocalSMTP
from tests.helpers import BACKUP, ONCALL, serving, write_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def run_once(config: Path, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "service.py"), "once", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TEST_IMAP_PASSWORD": password},
        cwd=ROOT,
    )


def stdout_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return done.stdout.splitlines()


def test_once_exits_3_and_says_so_when_an_urgent_alert_waits_for_the_mail_server(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP
) -> None:
    dovecot.append(samples.consultation("mika.test@example.jp", "相談", "もう死にたいです"))
    config = write_config(tmp_path, dovecot, smtp_server)
    smtp_server.stop()  # the relay is down: connections are refused

    done = run_once(config, dovecot.password)

    assert done.returncode == 3, done.stderr
    assert "still undelivered after this run" in done.stderr
    assert "mika.test" not in done.stderr
    # The contract lines are unchanged.
    lines = stdout_lines(done)
    assert lines[0].startswith("fetched 1, stored 1, cases 1, ")
    assert "sent 0, deferred 2, failed 0" in lines

    # Once the relay is back, the next run delivers it and exits 0 again.
    smtp_server.start()
    again = run_once(config, dovecot.password)
    assert again.returncode == 0, again.stderr
    assert "undelivered" not in again.stderr
    assert "sent 2, deferred 0, failed 0" in stdout_lines(again)


def test_once_exits_0_but_says_so_when_only_an_acknowledgement_waits(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP
) -> None:
    """An acknowledgement is retried for a day and then flagged for staff to phone: a
    short outage is no emergency, so the exit stays 0, but cron still gets a line."""
    dovecot.append(samples.consultation("taro.test@example.jp", "相談", "ゴミの出し方について"))
    config = write_config(tmp_path, dovecot, smtp_server)
    smtp_server.stop()

    done = run_once(config, dovecot.password)

    assert done.returncode == 0, done.stderr
    assert "acknowledgement(s) to residents still waiting" in done.stderr
    assert "undelivered" not in done.stderr
    assert "sent 0, deferred 1, failed 0" in stdout_lines(done)


def test_once_exits_0_when_every_mail_was_delivered(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP
) -> None:
    dovecot.append(samples.consultation("mika.test@example.jp", "相談", "もう死にたいです"))
    config = write_config(tmp_path, dovecot, smtp_server)

    done = run_once(config, dovecot.password)

    assert done.returncode == 0, done.stderr
    assert "undelivered" not in done.stderr and "still waiting" not in done.stderr
    assert "sent 2, deferred 0, failed 0" in stdout_lines(done)


class _RefuseAt:
    """aiosmtpd handler: ``reply`` (550 by default) for the given recipients at RCPT,
    250 for the rest."""

    def __init__(self, refused: set[str], reply: str = "550 5.1.1 user unknown") -> None:
        self.refused = refused
        self.reply = reply
        self.accepted: list[list[str]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.refused:
            return self.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.accepted.append(list(envelope.rcpt_tos))
        return "250 OK"


@pytest.mark.parametrize(
    ("backup", "status"),
    [(False, 3), (True, 0)],
    ids=["nobody-to-fail-over-to", "failed-over-to-backup"],
)
def test_once_exits_3_when_a_refused_alert_reached_nobody_in_the_run(
    tmp_path: Path, dovecot: LocalDovecot, backup: bool, status: int
) -> None:
    """The on-call address is refused for good. With a backup the failover reaches a
    person in the same run (exit 0, as before); without one nobody has the case."""
    handler = _RefuseAt({ONCALL})
    dovecot.append(samples.consultation("mika.test@example.jp", "相談", "もう死にたいです"))
    with serving(handler) as smtp:
        config = write_config(tmp_path, dovecot, smtp)  # type: ignore[arg-type]
        if not backup:
            text = config.read_text(encoding="utf-8").replace(f'backup = ["{BACKUP}"]', "")
            config.write_text(text, encoding="utf-8")
        done = run_once(config, dovecot.password)

    assert done.returncode == status, done.stderr
    assert ("still undelivered after this run" in done.stderr) == (status == 3)
    assert ([BACKUP] in handler.accepted) == backup


def test_once_exits_0_when_the_on_call_person_has_the_alert_and_a_second_address_waits(
    tmp_path: Path, dovecot: LocalDovecot
) -> None:
    """A server that greylists one of two on-call addresses took the alert for the other:
    a person has it, so no page to the administrator, but a note (review rv11b F4)."""
    second = "second.oncall@example.jp"
    handler = _RefuseAt({second}, "451 4.7.1 greylisted, try again later")
    dovecot.append(samples.consultation("mika.test@example.jp", "相談", "もう死にたいです"))
    with serving(handler) as smtp:
        config = write_config(tmp_path, dovecot, smtp)  # type: ignore[arg-type]
        text = config.read_text(encoding="utf-8").replace(
            f'to = ["{ONCALL}"]', f'to = ["{ONCALL}", "{second}"]'
        )
        config.write_text(text, encoding="utf-8")
        done = run_once(config, dovecot.password)

    assert [ONCALL] in handler.accepted
    assert done.returncode == 0, done.stderr
    assert "still undelivered" not in done.stderr
    assert "reached some recipients" in done.stderr


def test_once_help_documents_its_exit_statuses() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "service.py"), "once", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "Exit status: 0 done" in text
    assert "2 the mailbox or the escalation pass failed" in text
    assert "3 an urgent alert or escalation is still undelivered" in text
