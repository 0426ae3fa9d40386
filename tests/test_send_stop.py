"""SIGTERM during a delivery run with a slow relay (review rvr, finding 2).

A delivery run used to send every due mail before the worker noticed SIGTERM: with a
relay that scans each mail for a few seconds, ten acknowledgements kept the worker up
for half a minute after the signal, and a longer queue or a stalled relay outlived
systemd's ``TimeoutStopSec``, whose SIGKILL then lands inside a mail's transaction (an
acknowledgement caught after DATA is never resent: 送信不明). Now the run stops before
claiming its next mail; the rest stays queued and goes out at the next start.

Against the real local Dovecot and aiosmtpd, ``service.py run`` in a subprocess as
systemd runs it. Every mail is synthetic.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from intake import samples
from intake.config import load_settings
from intake.localservers import LocalDovecot
from intake.send import IN_DOUBT
from intake.store import Case, Outbox, open_database
from tests.helpers import serving, write_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
RESIDENTS = [f"resident{i:02d}@example.jp" for i in range(10)]


class SlowRelay:
    """A relay that answers each mail's content after ``delay`` seconds (a content
    scanner, a slow link); records the recipients of every mail it took."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.taken: list[list[str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        self.taken.append(list(envelope.rcpt_tos))
        return "250 OK queued"


def _start(config: Path, imap: LocalDovecot, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TEST_IMAP_PASSWORD": imap.password}
    env.setdefault("SOUDAN_INTAKE_CACHE_DIR", str(config.parent / "cache"))
    with open(log, "ab") as err:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "service.py"), "run", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _acks_per_resident(relay: SlowRelay) -> Counter[str]:
    return Counter(r for rcpts in relay.taken for r in rcpts if r in RESIDENTS)


@pytest.mark.timeout(300)  # two worker starts and ten triages: ~60 s on a loaded machine
def test_sigterm_ends_a_slow_delivery_run_between_two_mails_and_the_rest_go_at_the_next_start(
    tmp_path: Path, dovecot: LocalDovecot
) -> None:
    relay = SlowRelay(delay=5.0)
    dovecot.append_many(
        [samples.consultation(r, "相談", "最近ひとりで寂しいです。") for r in RESIDENTS]
    )
    log = tmp_path / "run.log"
    with serving(relay) as smtp:
        config = write_config(tmp_path, dovecot, smtp)
        worker = _start(config, dovecot, log)
        try:
            assert _until(lambda: len(_acks_per_resident(relay)) >= 1, 120), log.read_text()
            worker.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert worker.wait(timeout=60) == 0
            took = time.monotonic() - signalled
        finally:
            if worker.poll() is None:
                worker.kill()
        # The mail in hand (5 s at most) and the shutdown, not the 45 s the other nine
        # would take (the run used to send them all first). 30 s: a slow, loaded
        # machine's margin for the shutdown, still well short of eight more mails (40 s).
        assert took < 30, f"worker took {took:.1f}s to stop"
        first = _acks_per_resident(relay)
        assert len(first) < len(RESIDENTS), "the whole queue went out before stopping"
        assert all(n == 1 for n in first.values())
        settings = load_settings(config)
        engine = open_database(settings.database_url)
        try:
            with Session(engine) as s:
                acks = s.exec(select(Outbox).where(Outbox.kind == "ack")).all()
                states = Counter(c.ack_state for c in s.exec(select(Case)).all())
            assert sorted(r.status for r in acks).count("sent") == sum(first.values())
            assert {r.status for r in acks} <= {"sent", "queued"}, [r.status for r in acks]
            assert not any((r.last_error or "").startswith(IN_DOUBT) for r in acks)
            assert states["ack_in_doubt"] == 0 and states["ack_failed"] == 0, states

            # The next start sends the rest, each resident's acknowledgement once.
            relay.delay = 0.0
            worker = _start(config, dovecot, log)
            try:
                done = _until(lambda: len(_acks_per_resident(relay)) == len(RESIDENTS), 120)
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(timeout=60) == 0
            finally:
                if worker.poll() is None:
                    worker.kill()
            assert done, log.read_text()
            assert _acks_per_resident(relay) == Counter(RESIDENTS)
            with Session(engine) as s:
                assert {r.status for r in s.exec(select(Outbox).where(Outbox.kind == "ack"))} == {
                    "sent"
                }
                assert {c.ack_state for c in s.exec(select(Case))} == {"sent"}
        finally:
            engine.dispose()
