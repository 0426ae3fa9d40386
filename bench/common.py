"""Shared pieces of the issue-7 benchmarks: synthetic mail, local servers, config, memory.

Why a generator of our own instead of ``intake.samples``: the benchmarks need 10,000 to
100,000 mails that are deterministic (same bytes every run, so figures compare across
runs and machines), unique (the pipeline deduplicates by SHA-256), ~3 KB, and encoded the
way Japanese mailers really send them: ISO-2022-JP 7bit, Shift_JIS 8bit, UTF-8 base64 and
quoted-printable, EUC-JP 8bit, and HTML-only mail. ``EmailMessage`` would also be ~10x
slower to build at that count. Every sender, name and text here is invented.
"""

from __future__ import annotations

import base64
import os
import quopri
import random
import resource
import statistics
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from email.header import Header
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PYTHON = str(ROOT / ".venv" / "bin" / "python")
PASSWORD_ENV = "BENCH_IMAP_PASSWORD"
OWN = "sasaean@city.kasaoka.okayama.jp"
ONCALL = "oncall@example.jp"
BACKUP = "backup@example.jp"
DATE = "Thu, 26 Nov 2026 10:00:00 +0900"

# Synthetic consultation sentences, JIS X 0208 only so that every charset can carry them.
SENTENCES = [
    "最近バイトのシフトを減らされて家賃が払えないかもしれません",
    "祖母の介護で夜も眠れない日が続いていて疲れました",
    "クラスで無視されるようになって学校に行くのがしんどいです",
    "一人暮らしで友達もいないし誰とも話さない日ばかりです",
    "ボランティアに参加してみたいのですが申し込み方法を教えてください",
    "今日は天気が良かったので少しだけ散歩に出かけました",
    "母は仕事が忙しくて弟の世話は私がしています",
    "奨学金の返済が毎月きつくて生活費が足りません",
    "先輩にからかわれるのが嫌だけど言い出せない",
    "部活をやめてから家にこもりがちで昼夜が逆転しています",
    "就職活動がうまくいかず自分には価値がないように感じます",
    "父の病院の付き添いで授業を休むことが増えました",
]
URGENT = ["もう消えたいと思ってしまいます", "死にたいと毎日考えています"]
SUBJECTS = ["相談です", "話を聞いてほしい", "お金のこと", "家族のこと", "学校のこと", "お願い"]

# (charset, content-type, transfer encoding): the mix of a Japanese municipal mailbox.
KINDS = [
    ("iso-2022-jp", "plain", "7bit"),
    ("shift_jis", "plain", "8bit"),
    ("utf-8", "plain", "base64"),
    ("utf-8", "plain", "quoted-printable"),
    ("euc-jp", "plain", "8bit"),
    ("utf-8", "html", "base64"),
    ("shift_jis", "html", "8bit"),
]


def _text(rng: random.Random, urgent: bool, target: int) -> list[str]:
    lines: list[str] = ["市役所の相談窓口の方へ", ""]
    length = 0
    while length < target:
        line = "。".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 2))) + "。"
        if urgent and len(lines) == 4:
            line = rng.choice(URGENT) + "。"
        lines.append(line)
        length += len(line)
    lines += ["", "よろしくお願いします。"]
    return lines


def _encode_lines(lines: list[str], charset: str) -> bytes:
    """Encode line by line: ISO-2022-JP must return to ASCII before every line end."""
    return b"\r\n".join(line.encode(charset) for line in lines) + b"\r\n"


def make_mail(i: int, *, urgent: bool | None = None, seed: int = 7, size: int = 3000) -> bytes:
    """Mail number ``i`` of the synthetic corpus: same bytes for the same (i, seed).

    About one in twenty is urgent (when ``urgent`` is None); the sender is unique per
    ``i`` so that every mail gets its own acknowledgement (no rate limit applies).
    """
    rng = random.Random(seed * 1_000_003 + i)
    charset, subtype, cte = KINDS[i % len(KINDS)]
    if urgent is None:
        urgent = rng.random() < 0.05
    # Bytes per character differ by charset and encoding; aim the raw size near ``size``.
    per_char = {"iso-2022-jp": 2.2, "shift_jis": 2.0, "euc-jp": 2.0, "utf-8": 3.0}[charset]
    if cte == "base64":
        per_char *= 4 / 3
    elif cte == "quoted-printable":
        per_char *= 3.0
    target = int((size - 420) / per_char)
    lines = _text(rng, urgent, target)
    if subtype == "html":
        lines = (
            [f'<html><head><meta charset="{charset}"></head><body>']
            + [f"<p>{line}</p>" if line else "<br>" for line in lines]
            + ["</body></html>"]
        )
    body = _encode_lines(lines, charset)
    if cte == "base64":
        body = base64.encodebytes(body).replace(b"\n", b"\r\n")
    elif cte == "quoted-printable":
        body = quopri.encodestring(body.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    subject = Header(f"{rng.choice(SUBJECTS)} {i}", charset).encode()
    head = (
        f"From: resident{i:06d}@example.jp\r\n"
        f"To: {OWN}\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {DATE}\r\n"
        f"Message-ID: <bench.{seed}.{i}@example.jp>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: text/{subtype}; charset="{charset.upper()}"\r\n'
        f"Content-Transfer-Encoding: {cte}\r\n\r\n"
    )
    return head.encode("ascii") + body


def make_mails(n: int, *, seed: int = 7, start: int = 0) -> Iterator[bytes]:
    """``n`` mails of the corpus, numbered from ``start`` (a generator: 100k fit nowhere)."""
    for i in range(start, start + n):
        yield make_mail(i, seed=seed)


def write_config(
    folder: Path,
    imap_host: str,
    imap_port: int,
    imap_user: str,
    *,
    smtp_port: int = 9,
    db: Path | None = None,
    batch_size: int = 100,
) -> Path:
    """A service config for the local servers (plain text on loopback, SQLite).

    ``smtp_port`` may point nowhere when the benchmark never delivers (ingest, poll).
    """
    db = db or folder / "intake.db"
    path = folder / f"{db.stem}.toml"
    path.write_text(
        f"""
[mailbox]
host = "{imap_host}"
port = {imap_port}
security = "plain"
username = "{imap_user}"
password_env = "{PASSWORD_ENV}"
folder = "INBOX"
timeout = 60
poll_interval = 1
batch_size = {batch_size}

[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "plain"
from_address = "{OWN}"
from_name = "笠岡市 ささえ愛相談窓口"
timeout = 10

[database]
url = "sqlite:///{db.as_posix()}"

[oncall]
to = ["{ONCALL}"]
backup = ["{BACKUP}"]
""",
        encoding="utf-8",
    )
    return path


@dataclass
class Memory:
    """This process's resident memory, read from /proc (Linux) or getrusage."""

    rss_mb: float
    peak_mb: float


def memory() -> Memory:
    """Current and peak RSS in MB. VmHWM is the kernel's peak; ru_maxrss the fallback."""
    values: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    peak = values.get("VmHWM", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return Memory(rss_mb=values.get("VmRSS", peak), peak_mb=peak)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): p99 of 50 values is the largest but none."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def child_env(password: str) -> dict[str, str]:
    """Environment for a service subprocess: the IMAP password and the repo on the path."""
    return {**os.environ, PASSWORD_ENV: password, "PYTHONPATH": str(ROOT)}
