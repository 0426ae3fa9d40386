"""Benchmark 2 of issue 7: a poll that finds nothing new, at 10,000 and at 100,000 mails.

Run: ``.venv/bin/python bench/bench_poll.py [--n 10000] [--factor 10] [--polls 60]``.

The question is whether the cost of an idle poll grows with the size of the mailbox
(target: ratio large/small <= 1.5). Each poll is the worker's own code path on one open,
selected connection: ``process_new_mail(svc, mailbox, now)`` with the database cursor
already at the highest UID (set directly in the Cursor row, as if every mail had been
processed), so the poll must find nothing. Also timed, to show what the service adds to
IMAP: the worker's full loop step (``current_uidvalidity`` STATUS + the poll) and the
bare ``UID SEARCH UID n:*`` alone. Figures are the median (and p90) of ``--polls`` polls
after ten warm-up polls.

The two sizes live in two Dovecot servers that are polled alternately, poll by poll:
on a shared machine, measuring one size after the other lets a burst of load from other
processes land on one size only (a first version did, and reported a false 2x).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PASSWORD_ENV, make_mails, median, percentile, write_config

TARGET_RATIO = 1.5
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=ZoneInfo("Asia/Tokyo"))


class Poller:
    """One mailbox (its own Dovecot and SQLite), an open connection and a cursor at the top.

    Three ways to poll it, each timed by the caller:
    ``poll`` is the worker's call, ``worker_step`` adds the worker's UIDVALIDITY check
    (STATUS), ``uid_search`` is the bare IMAP command underneath.
    """

    def __init__(self, imap: object, folder: Path) -> None:
        from intake.config import load_settings
        from intake.fetch import Mailbox
        from intake.localservers import LocalDovecot
        from intake.pipeline import Service
        from intake.store import get_cursor, session_scope

        assert isinstance(imap, LocalDovecot)
        os.environ[PASSWORD_ENV] = imap.password
        self.svc = Service.from_settings(
            load_settings(
                write_config(folder, imap.host, imap.port, imap.user, db=folder / "poll.db")
            )
        )
        self.mailbox = Mailbox(self.svc.settings.mailbox)
        state = self.mailbox.open()
        assert self.mailbox.client is not None
        self.client = self.mailbox.client
        self.uidvalidity = state.uidvalidity
        self.top = max(self.client.search(["ALL"]) or [0])
        with session_scope(self.svc.engine) as session:
            cursor = get_cursor(session, self.svc.settings.mailbox.key)
            cursor.uidvalidity = state.uidvalidity
            cursor.last_uid = self.top

    def poll(self) -> None:
        from intake.pipeline import process_new_mail

        report = process_new_mail(self.svc, self.mailbox, NOW)
        if report.fetched:
            raise SystemExit(f"the poll fetched {report.fetched} mails; cursor not at top")

    def worker_step(self) -> None:
        if self.mailbox.current_uidvalidity() != self.uidvalidity:
            raise SystemExit("UIDVALIDITY changed during the benchmark")
        self.poll()

    def uid_search(self) -> None:
        self.client.search(["UID", f"{self.top + 1}:*"])

    def close(self) -> None:
        self.mailbox.close()


KINDS = {
    "poll": "process_new_mail",
    "worker_step": "STATUS + process_new_mail",
    "uid_search": "bare UID SEARCH n:*",
}


def measure(pollers: list[Poller], polls: int, warmup: int = 10) -> list[dict[str, list[float]]]:
    """Alternate the mailboxes poll by poll, so load from other processes hits both alike."""
    times: list[dict[str, list[float]]] = [{k: [] for k in KINDS} for _ in pollers]
    for round_ in range(warmup + polls):
        for kind in KINDS:
            for poller, record in zip(pollers, times, strict=True):
                fn = getattr(poller, kind)
                t0 = time.perf_counter()
                fn()
                elapsed = (time.perf_counter() - t0) * 1000
                if round_ >= warmup:
                    record[kind].append(elapsed)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="mails in the small mailbox")
    parser.add_argument("--factor", type=int, default=10, help="large mailbox = n * factor")
    parser.add_argument("--polls", type=int, default=60, help="timed polls per size (>= 50)")
    args = parser.parse_args(argv)

    from intake.localservers import LocalDovecot

    sizes = (args.n, args.n * args.factor)
    tmp = Path(tempfile.mkdtemp(prefix="bench-poll-"))
    servers = [LocalDovecot(tmp / f"m{size}") for size in sizes]
    pollers: list[Poller] = []
    try:
        for server, size in zip(servers, sizes, strict=True):
            server.start()
            if "default_vsz_limit = 1G" not in server.conf.read_text():
                print(
                    "warning: LocalDovecot config lacks default_vsz_limit = 1G; "
                    "Dovecot may run out of memory at 100,000 mails"
                )
            t0 = time.perf_counter()
            server.append_many(make_mails(size))
            print(
                f"mailbox of {size:,} mails appended in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
        time.sleep(2.0)  # let Dovecot and the disk settle after the appends
        pollers = [Poller(server, server.base.parent) for server in servers]
        results = measure(pollers, args.polls)
    finally:
        for poller in pollers:
            poller.close()
        for server in servers:
            server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

    small, large = sizes
    print(
        f"\nempty poll, ms per call: median (p90) over {args.polls} polls on one open "
        "connection per mailbox, the two mailboxes polled alternately"
    )
    print(f"{'':>28}{small:>16,}{large:>16,}   ratio")
    for key, label in KINDS.items():
        a, b = results[0][key], results[1][key]
        cells = [f"{median(x):7.2f} ({percentile(x, 90):5.2f})" for x in (a, b)]
        print(f"{label:>28}{cells[0]:>16}{cells[1]:>16}   {median(b) / median(a):.2f}")
    ratio = median(results[1]["poll"]) / median(results[0]["poll"])
    verdict = "ok" if ratio <= TARGET_RATIO else "MISSED"
    print(
        f"ratio {large:,}/{small:,} for process_new_mail = {ratio:.2f} "
        f"(target <= {TARGET_RATIO}) {verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
