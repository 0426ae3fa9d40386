"""Benchmark 4 of issue 7: urgent mail APPENDed to IMAP -> alert at the SMTP server.

Run: ``.venv/bin/python bench/bench_alert_latency.py [--n 50]``.

The real worker (``python service.py run --config ...``) runs as a subprocess against a
private Dovecot (IDLE on) and a recording aiosmtpd server, both on loopback. The
benchmark APPENDs one urgent synthetic mail at a time over a connection it keeps open,
and times from just before the APPEND command to the moment the SMTP server has
accepted the on-call alert; it then waits for the resident's acknowledgement too, so
mails never overlap. Prints p50 / p90 / p99 / max (target p99 < 2 s). Finally the worker
gets SIGTERM and must exit with status 0 (the IDLE wait wakes at least every 5 s).
A second IMAP client in IDLE stamps Dovecot's EXISTS notifications, so the latency splits
into Dovecot's share (APPEND -> EXISTS) and the service's (EXISTS -> alert accepted).

One warm-up mail is sent first and not counted: the worker's first triage loads the
MeCab dictionary, a start-up cost rather than alert latency.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ONCALL,
    PYTHON,
    ROOT,
    child_env,
    make_mail,
    median,
    percentile,
    write_config,
)
from intake.localservers import LocalDovecot, LocalSMTP, ReceivedMail

TARGET_P99 = 2.0
START_TIMEOUT = 60.0


class IdleObserver(threading.Thread):
    """A second IMAP client in IDLE that stamps every EXISTS: Dovecot's own share of the delay.

    APPEND -> EXISTS at this observer is what IMAP IDLE costs before the worker can even
    start; alert minus that is the service's share (fetch, triage, store, SMTP).
    """

    def __init__(self, imap: LocalDovecot) -> None:
        super().__init__(daemon=True)
        self.imap = imap
        self.stamps: list[float] = []
        self.stopping = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        with self.imap.connect(timeout=30) as client:
            client.select_folder("INBOX", readonly=True)
            client.idle()
            self.ready.set()
            while not self.stopping.is_set():
                for response in client.idle_check(timeout=0.5):
                    if isinstance(response, tuple) and b"EXISTS" in response:
                        self.stamps.append(time.perf_counter())
            client.idle_done()

    def first_after(self, t0: float) -> float | None:
        later = [t for t in self.stamps if t >= t0]
        return later[0] if later else None


class TimedSMTP(LocalSMTP):
    """LocalSMTP that stamps each accepted mail with ``time.perf_counter()`` on arrival."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, ReceivedMail]] = []
        self.changed = threading.Condition()

    def _record(self, mail: ReceivedMail) -> None:
        stamp = time.perf_counter()
        super()._record(mail)
        with self.changed:
            self.arrivals.append((stamp, mail))
            self.changed.notify_all()

    def wait_until(self, pred_count: int, kind: str, timeout: float) -> float:
        """Arrival time of the ``pred_count``-th mail of ``kind`` ("alert" or "ack")."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                hits = [t for t, m in self.arrivals if (ONCALL in m.rcpt_tos) == (kind == "alert")]
                if len(hits) >= pred_count:
                    return hits[pred_count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"only {len(hits)} of {pred_count} {kind} mails arrived in {timeout:g} s"
                    )
                self.changed.wait(remaining)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="urgent mails to time")
    parser.add_argument(
        "--timeout", type=float, default=20.0, help="seconds to wait for one alert before giving up"
    )
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-alert-"))
    worker: subprocess.Popen[bytes] | None = None
    log_path = tmp / "worker.log"
    latencies: list[float] = []
    idle_delays: list[float] = []
    try:
        smtp = TimedSMTP()
        with LocalDovecot(tmp) as imap, smtp:
            config = write_config(
                tmp, imap.host, imap.port, imap.user, smtp_port=smtp.port, db=tmp / "alert.db"
            )
            with log_path.open("wb") as log:
                worker = subprocess.Popen(
                    [PYTHON, str(ROOT / "service.py"), "run", "--config", str(config)],
                    env=child_env(imap.password),
                    cwd=ROOT,
                    stdout=log,
                    stderr=log,
                )
            observer = IdleObserver(imap)
            observer.start()
            observer.ready.wait(10)
            with imap.connect(timeout=30) as client:
                # Warm-up (not timed): proves the worker is up, in IDLE, and has loaded MeCab.
                client.append("INBOX", make_mail(900_000, urgent=True))
                smtp.wait_until(1, "alert", START_TIMEOUT)
                smtp.wait_until(1, "ack", START_TIMEOUT)
                time.sleep(0.5)  # let the worker go back into IDLE
                for i in range(args.n):
                    raw = make_mail(900_001 + i, urgent=True)
                    t0 = time.perf_counter()
                    client.append("INBOX", raw)
                    arrived = smtp.wait_until(i + 2, "alert", args.timeout)
                    latencies.append(arrived - t0)
                    smtp.wait_until(i + 2, "ack", args.timeout)
                    time.sleep(0.2)
                    seen = observer.first_after(t0)
                    if seen is not None:
                        idle_delays.append(seen - t0)
            observer.stopping.set()
            observer.join(timeout=5)
            stop_start = time.perf_counter()
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=30)
            stop_seconds = time.perf_counter() - stop_start
            worker = None
    except (TimeoutError, subprocess.TimeoutExpired) as exc:
        print(f"FAILED: {exc}; worker log tail:")
        print("\n".join(log_path.read_text(errors="replace").splitlines()[-30:]))
        return 1
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)

    p99 = percentile(latencies, 99)
    print(f"APPEND -> alert at SMTP over {len(latencies)} urgent mails (worker in IDLE):")
    print(
        f"  p50 {median(latencies):.3f} s   p90 {percentile(latencies, 90):.3f} s   "
        f"p99 {p99:.3f} s   max {max(latencies):.3f} s   min {min(latencies):.3f} s"
    )
    if idle_delays:
        service = [a - b for a, b in zip(latencies, idle_delays, strict=False)]
        print(
            f"  of which Dovecot IDLE (APPEND -> EXISTS at a second IDLE client, "
            f"{len(idle_delays)} mails): p50 {median(idle_delays):.3f} s   "
            f"p99 {percentile(idle_delays, 99):.3f} s"
        )
        print(
            f"  the service's share (alert - EXISTS): p50 {median(service):.3f} s   "
            f"p99 {percentile(service, 99):.3f} s"
        )
    print(f"p99 target < {TARGET_P99:g} s: {'ok' if p99 < TARGET_P99 else 'MISSED'}")
    clean = code == 0
    print(
        f"SIGTERM: worker exited with status {code} after {stop_seconds:.2f} s "
        f"({'clean' if clean else 'NOT CLEAN'})"
    )
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
