"""Two workers of one mailbox run their ``digest-HH:MM`` job at the same minute.

``uq_digest_entry`` kept the digest single, but the loser's transaction failed
(PostgreSQL IntegrityError, SQLite stale snapshot) and its job logged an ERROR traceback
at every digest time. The partner transactions are serialised per mailbox instead: the
second job waits, sees the first one's entries and queues nothing.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

import intake.digest as digest_module
from intake.config import load_settings
from intake.digest import queue_digests
from intake.localservers import LocalSMTP
from intake.pipeline import Service
from intake.store import DigestEntry, Outbox
from tests.helpers import urgent_case
from tests.test_escalate_review import NOON, _database, config

NEXT_MORNING = NOON.replace(hour=9) + timedelta(days=1)


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_workers_digest_jobs_at_once_queue_one_digest_and_neither_fails(
    tmp_path: Path,
    smtp_server: LocalSMTP,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    path = config(tmp_path, smtp_server)
    url = _database(request, tmp_path, kind)
    if url is not None:
        sqlite_url = f"sqlite:///{(tmp_path / 'intake.db').as_posix()}"
        path.write_text(path.read_text(encoding="utf-8").replace(sqlite_url, url), "utf-8")
    a = Service.from_settings(load_settings(path))
    b = Service.from_settings(load_settings(path))
    for svc in (a, b):
        request.addfinalizer(svc.engine.dispose)
    cases = [urgent_case(a, NOON + timedelta(minutes=i)) for i in range(3)]
    # Before the fix both jobs got here with the same unlisted messages; now the second
    # waits for the first's commit, so the meeting times out and the first goes on.
    meet = threading.Barrier(2, timeout=2)
    real = digest_module.render_digest

    def together(*args: Any, **kw: Any) -> Any:
        with contextlib.suppress(threading.BrokenBarrierError):
            meet.wait()
        return real(*args, **kw)

    monkeypatch.setattr(digest_module, "render_digest", together)
    start = threading.Barrier(2)
    results: dict[str, Any] = {}

    def run(name: str, svc: Service, late: timedelta) -> None:
        start.wait()
        try:
            results[name] = queue_digests(svc, NEXT_MORNING + late)
        except BaseException as exc:  # reported below
            results[name] = type(exc).__name__

    threads = [
        threading.Thread(target=run, args=("a", a, timedelta(0))),
        threading.Thread(target=run, args=("b", b, timedelta(milliseconds=3))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results.values(), key=len) == [{}, {"city": 3}], results
    with Session(a.engine) as s:
        digests = s.exec(select(Outbox.partner).where(Outbox.kind == "digest")).all()
        listed = s.exec(select(DigestEntry.case_id).where(DigestEntry.partner == "city")).all()
    assert digests == ["city"]
    assert sorted(listed) == cases
