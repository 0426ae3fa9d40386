"""Test helpers shared by integration tests: a config file pointing at the local servers."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from intake.localservers import LocalDovecot, LocalSMTP, reserve_port, serve_smtp
from intake.rules import RuleSet
from intake.store import Case, StoredMessage, session_scope, to_db
from intake.triage import classify_text

if TYPE_CHECKING:
    from intake.pipeline import Service

OWN = "sasaean@city.kasaoka.okayama.jp"
ONCALL = "oncall@example.jp"
BACKUP = "backup@example.jp"


def write_config(
    tmp_path: Path,
    imap: LocalDovecot,
    smtp: LocalSMTP,
    *,
    extra: str = "",
    password_env: str = "TEST_IMAP_PASSWORD",
) -> Path:
    """A config for the local servers: plain text (loopback only), SQLite in tmp_path."""
    path = tmp_path / "intake.toml"
    path.write_text(
        f"""
[mailbox]
host = "{imap.host}"
port = {imap.port}
security = "plain"
username = "{imap.user}"
password_env = "{password_env}"
folder = "INBOX"
timeout = 10
poll_interval = 1

[smtp]
host = "{smtp.host}"
port = {smtp.port}
security = "plain"
from_address = "{OWN}"
from_name = "笠岡市 ささえ愛相談窓口"
timeout = 10

[database]
url = "sqlite:///{(tmp_path / "intake.db").as_posix()}"

[oncall]
to = ["{ONCALL}"]
backup = ["{BACKUP}"]
{extra}
""",
        encoding="utf-8",
    )
    return path


def settled(smtp: LocalSMTP, seconds: float = 1.0) -> list:
    """Every mail the server holds after waiting ``seconds`` for stragglers.

    For asserting that nothing MORE arrived (``wait_for`` raises when fewer arrive).
    """
    import time

    time.sleep(seconds)
    return smtp.messages


def offline_service(tmp_path: Path, extra: str = "") -> Service:
    """A Service on a temp SQLite file; the mail servers are never contacted."""
    from intake.config import load_settings
    from intake.pipeline import Service

    imap = SimpleNamespace(host="127.0.0.1", port=1, user="intake")
    smtp = SimpleNamespace(host="127.0.0.1", port=1)
    return Service.from_settings(load_settings(write_config(tmp_path, imap, smtp, extra=extra)))  # type: ignore[arg-type]


def urgent_case(svc: Service, now: datetime) -> int:
    """An urgent case whose alert is queued by the pipeline's own ``_queue_alert``."""
    from intake.pipeline import _queue_alert  # the pipeline imports the world: not at load

    key = svc.settings.mailbox.key
    with session_scope(svc.engine) as s:
        case = Case(
            mailbox=key,
            created_at=to_db(now),
            sender="resident@example.jp",
            urgent=True,
            partner="city",
            topic="other",
            phone='["090-1234-5678"]',
            urgent_reasons=json.dumps([{"surface": "消えたい", "rule": "u1"}]),
        )
        s.add(case)
        s.flush()
        msg = StoredMessage(
            mailbox=key,
            sha256=uuid.uuid4().hex,
            raw=b"x",
            received_at=to_db(now),
            status="processed",
            case_id=case.id,
            new_text="もう消えたいです",
        )
        s.add(msg)
        s.flush()
        _queue_alert(svc, s, case, msg, now, None, now)
        assert case.id is not None
        return case.id


@contextlib.contextmanager
def serving(handler: Any, **options: Any) -> Iterator[SimpleNamespace]:
    """A real aiosmtpd server with ``handler`` on a free loopback port, stopped afterwards.

    Yields ``host`` and ``port`` (what ``write_config`` reads). ``options`` go to
    ``serve_smtp`` (e.g. ``enable_SMTPUTF8=False``, as many relays are). The server
    listens on a socket bound beforehand: a port merely found free could be taken by
    another program before the server binds it.
    """
    controller = serve_smtp(handler, reserve_port(), **options)
    try:
        yield SimpleNamespace(host="127.0.0.1", port=controller.port)
    finally:
        controller.stop()


@contextlib.contextmanager
def relay_down() -> Iterator[SimpleNamespace]:
    """A loopback ``host``/``port`` where connections are refused for the whole block.

    The port is held (bound, not listening; see ``reserve_port``): a port merely found
    free might meanwhile belong to another program's server, and the test would talk
    to it instead of meeting a relay that is down.
    """
    with contextlib.closing(reserve_port()) as sock:
        yield SimpleNamespace(host="127.0.0.1", port=sock.getsockname()[1])


def spawn_logged(args: list[str], log: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``args`` with stdout discarded and stderr (the service's log) in file ``log``.

    Why not ``stderr=PIPE``: a pipe holds 64 KB. A worker that logs more than that (a
    traceback per reconnect on a loaded machine, DEBUG) before the test reads it blocks
    in its next log write and stops working: the test then times out waiting for mail,
    far from the cause. A file never fills; read it with ``log.read_text()``, also
    while the process runs.
    """
    with log.open("wb") as err:  # the child keeps its own descriptor
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, **popen)


def urgent_reasons(rules: RuleSet, text: str, subject: str = "") -> set[str]:
    """The rule ids that made a mail urgent (empty when it is not urgent): what the rule
    tests assert, so that a test names the rule it expects, not only "urgent"."""
    return {m.rule for m in classify_text(subject, text, rules).urgent_reasons}
