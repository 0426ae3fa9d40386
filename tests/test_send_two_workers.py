"""Two workers of one mailbox on PostgreSQL, one of which cannot use the relay (review
rvt, F5).

Worker A's host cannot reach the relay (egress firewalled, not in the relay's networks)
or the relay refuses A's session (wrong credentials, MAIL FROM refused) or defers every
mail A offers. A's runs used to write a backoff into every due row, rows it never
claimed included, so worker B, which reaches the relay, found them not due: each such
run doubled their delay. Now A backs off only the row it claimed; the others stay due
and B sends them at once.

Worker A is a real second process (its own worker id and memory); worker B runs here.
Real aiosmtpd relays and a real PostgreSQL server. Every mail is synthetic.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from intake.config import load_settings
from intake.localservers import LocalSMTP
from intake.pipeline import Service, _queue_ack
from intake.store import Case, Outbox, session_scope, to_db
from tests.helpers import relay_down, serving
from tests.test_escalate_review import NOON, _database, config

ROOT = Path(__file__).resolve().parents[1]
RESIDENTS = ["hanako@example.jp", "taro@example.jp", "jiro@example.jp"]

# One delivery run of worker A in its own process, at the simulated time given.
WORKER_A = (
    "import sys; from datetime import datetime;"
    "from intake.config import load_settings; from intake.store import open_database;"
    "from intake.send import deliver_outbox;"
    "s = load_settings(sys.argv[1]); engine = open_database(s.database_url);"
    "print(deliver_outbox(s.smtp, engine, datetime.fromisoformat(sys.argv[2]), s.mailbox.key));"
    "engine.dispose()"
)


class RefusesMailFrom:
    """A relay that answers our MAIL FROM with ``reply``: 530 (it wants credentials
    worker A does not have), or 451 (it defers every mail A offers)."""

    def __init__(self, reply: str) -> None:
        self.reply = reply

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        return self.reply


def _on(url: str, path: Path) -> Path:
    sqlite_url = f"sqlite:///{(path.parent / 'intake.db').as_posix()}"
    path.write_text(path.read_text(encoding="utf-8").replace(sqlite_url, url), "utf-8")
    return path


def _ack(svc: Service, sender: str, now: datetime) -> None:
    with session_scope(svc.engine) as s:
        case = Case(mailbox=svc.settings.mailbox.key, created_at=to_db(now), sender=sender)
        s.add(case)
        s.flush()
        _queue_ack(svc, s, case, sender, in_reply_to=None, references=[], received=now, now=now)


def _rows(svc: Service) -> list[Outbox]:
    with Session(svc.engine) as s:
        return list(s.exec(select(Outbox).order_by(Outbox.id)).all())  # type: ignore[arg-type]


def _worker_a(path: Path, at: datetime) -> None:
    subprocess.run(
        [sys.executable, "-c", WORKER_A, str(path), at.isoformat()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("failure", "claims"),
    [
        ("connection refused", 0),  # A cannot reach the relay: it claims nothing
        ("530 5.7.0 Authentication required", 1),  # A's session refused at MAIL FROM
        ("451 4.3.2 System not accepting network messages", 1),  # every mail deferred
    ],
)
def test_a_worker_that_cannot_use_the_relay_leaves_the_rows_it_never_claimed_to_the_other(
    tmp_path: Path,
    smtp_server: LocalSMTP,
    request: pytest.FixtureRequest,
    failure: str,
    claims: int,
) -> None:
    url = _database(request, tmp_path, "postgresql")
    assert url is not None
    good = _on(url, config(tmp_path / "b", smtp_server))
    b = Service.from_settings(load_settings(good))
    request.addfinalizer(b.engine.dispose)
    for resident in RESIDENTS:
        _ack(b, resident, NOON)
    # Worker A's run, half a second after the rows fell due; same mailbox as B's.
    if failure == "connection refused":
        with relay_down() as closed:
            broken = _on(url, config(tmp_path / "a", closed))
            _worker_a(broken, NOON + timedelta(milliseconds=500))
    else:
        with serving(RefusesMailFrom(failure)) as relay:
            broken = _on(url, config(tmp_path / "a", relay))
            _worker_a(broken, NOON + timedelta(milliseconds=500))
    assert load_settings(broken).mailbox.key == b.settings.mailbox.key

    # A backed off only the row it claimed; the others are as they were queued.
    backed_off = [r for r in _rows(b) if r.attempts]
    untouched = [r for r in _rows(b) if not r.attempts]
    assert len(backed_off) == claims, [(r.id, r.attempts, r.last_error) for r in _rows(b)]
    assert all(r.status == "queued" and r.last_error is None for r in untouched)
    # So B, a second later, sends every one of them at once...
    report = b.deliver(NOON + timedelta(seconds=1))
    assert report.sent == len(RESIDENTS) - claims
    assert len(smtp_server.messages) == len(RESIDENTS) - claims
    # ...and the one A claimed after its backoff (30 s), once.
    b.deliver(NOON + timedelta(seconds=31))
    assert sorted(r for m in smtp_server.messages for r in m.rcpt_tos) == sorted(RESIDENTS)
    assert {r.status for r in _rows(b)} == {"sent"}
