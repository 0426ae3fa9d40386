"""Benchmark 2 of issue 7: a poll that finds nothing new, at 10,000 and at 100,000 mails.

Run: ``.venv/bin/python bench/bench_poll.py [--n 10000] [--factor 10] [--polls 60]``.

The question is whether the cost of an idle poll grows with the size of the mailbox
(target: ratio large/small <= 1.5). Each poll is the worker's own code path on one open,
selected connection: ``process_new_mail(svc, mailbox, now)`` with the database cursor
already at the highest UID (set directly in the Cursor row, as if every mail had been
processed), so the poll must find nothing. Also timed, to show what the service adds to
IMAP: the worker's full loop step (``current_uidvalidity`` STATUS + the poll) and the
bare ``UID SEARCH UID n:*`` alone. Figures are the median (and p90) of ``--polls`` polls
after five warm-up polls.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PASSWORD_ENV, make_mails, median, percentile, write_config

TARGET_RATIO = 1.5
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=ZoneInfo("Asia/Tokyo"))


def _timed(fn: Callable[[], object], polls: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    times: list[float] = []
    for _ in range(polls):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def measure(svc: object, polls: int) -> dict[str, list[float]]:
    """Put the cursor at the top of the mailbox, then time empty polls three ways."""
    from intake.fetch import Mailbox
    from intake.pipeline import Service, process_new_mail
    from intake.store import get_cursor, session_scope

    assert isinstance(svc, Service)
    with Mailbox(svc.settings.mailbox) as mailbox:
        state = mailbox.state
        assert state is not None and mailbox.client is not None
        top = max(mailbox.client.search(["ALL"]) or [0])
        with session_scope(svc.engine) as session:
            cursor = get_cursor(session, svc.settings.mailbox.key)
            cursor.uidvalidity = state.uidvalidity
            cursor.last_uid = top

        def poll() -> None:
            report = process_new_mail(svc, mailbox, NOW)
            if report.fetched:
                raise SystemExit(f"the poll fetched {report.fetched} mails; cursor not at top")

        def worker_step() -> None:
            if mailbox.current_uidvalidity() != state.uidvalidity:
                raise SystemExit("UIDVALIDITY changed during the benchmark")
            poll()

        client = mailbox.client

        def bare_search() -> None:
            client.search(["UID", f"{top + 1}:*"])

        return {
            "poll": _timed(poll, polls),
            "worker_step": _timed(worker_step, polls),
            "uid_search": _timed(bare_search, polls),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="mails in the small mailbox")
    parser.add_argument("--factor", type=int, default=10, help="large mailbox = n * factor")
    parser.add_argument("--polls", type=int, default=60, help="timed polls per size (>= 50)")
    args = parser.parse_args(argv)

    from intake.config import load_settings
    from intake.localservers import LocalDovecot
    from intake.pipeline import Service

    tmp = Path(tempfile.mkdtemp(prefix="bench-poll-"))
    results: dict[int, dict[str, list[float]]] = {}
    try:
        with LocalDovecot(tmp) as imap:
            conf = imap.conf.read_text()
            if "default_vsz_limit = 1G" not in conf:
                print("warning: LocalDovecot config lacks default_vsz_limit = 1G; "
                      "Dovecot may run out of memory at 100,000 mails")
            os.environ[PASSWORD_ENV] = imap.password
            svc = Service.from_settings(load_settings(
                write_config(tmp, imap.host, imap.port, imap.user, db=tmp / "poll.db")))
            have = 0
            for size in (args.n, args.n * args.factor):
                t0 = time.perf_counter()
                have += imap.append_many(make_mails(size - have, start=have))
                seconds = time.perf_counter() - t0
                print(f"mailbox now {have:,} mails (appended in {seconds:.0f} s)", flush=True)
                results[size] = measure(svc, args.polls)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    small, large = args.n, args.n * args.factor
    print(f"\nempty poll, ms per call: median (p90) over {args.polls} polls on one connection")
    print(f"{'':>28}{small:>16,}{large:>16,}   ratio")
    labels = {
        "poll": "process_new_mail",
        "worker_step": "STATUS + process_new_mail",
        "uid_search": "bare UID SEARCH n:*",
    }
    for key, label in labels.items():
        a, b = results[small][key], results[large][key]
        cells = [f"{median(x):7.2f} ({percentile(x, 90):5.2f})" for x in (a, b)]
        print(f"{label:>28}{cells[0]:>16}{cells[1]:>16}   {median(b) / median(a):.2f}")
    ratio = median(results[large]["poll"]) / median(results[small]["poll"])
    verdict = "ok" if ratio <= TARGET_RATIO else "MISSED"
    print(f"ratio {large:,}/{small:,} for process_new_mail = {ratio:.2f} "
          f"(target <= {TARGET_RATIO}) {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
