"""Throughput of ``classify_text`` on synthetic ~2 KB mails (target: >= 2,000 mails/s/core).

Run: ``.venv/bin/python bench/bench_classify.py``. The mails are generated from a small
vocabulary of synthetic sentences, shuffled per mail so that MeCab sees new lines (the
per-line caches in intake.lemmas only help for token lines, as in real mail).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from intake.rules import load_rules  # noqa: E402
from intake.triage import classify_text  # noqa: E402

SENTENCES = [
    "最近バイトのシフトを減らされて家賃が払えんかもしれません",
    "祖母の介護で夜も眠れない日が続いとるけぇ疲れました",
    "クラスで無視されるようになって学校に行くのがしんどいです",
    "一人暮らしで友達もおらんし誰とも話さない日ばっかりです",
    "ボランティアに参加してみたいのですが申し込み方法を教えてください",
    "今日は天気が良かったので少しだけ散歩に出かけました",
    "母は仕事が忙しくて弟の世話は私がしています",
    "奨学金の返済が毎月きつくて生活費が足りません",
    "先輩にいじられるのが嫌だけど言い出せない",
    "死ぬほど眠いけど課題を終わらせないといけない",
]


def make_mail(rng: random.Random, size: int = 2048) -> str:
    parts: list[str] = []
    length = 0
    while length < size:
        s = (
            rng.choice(SENTENCES)
            + rng.choice(["。", "！", "…", "😢", "\n"])
            + str(rng.randint(1, 99))
        )
        parts.append(s)
        length += len(s.encode("utf-8"))
    return "".join(parts)


def main(seconds: float = 2.0) -> float:
    rules = load_rules(ROOT / "rules")
    rng = random.Random(7)
    mails = [make_mail(rng) for _ in range(500)]
    classify_text("相談", mails[0], rules)  # warm up the analyser
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        classify_text("相談", mails[done % len(mails)], rules)
        done += 1
    elapsed = time.perf_counter() - start
    rate = done / elapsed
    size = sum(len(m.encode()) for m in mails) / len(mails)
    print(f"{done} mails of ~{size:.0f} bytes in {elapsed:.2f} s: {rate:,.0f} mails/s")
    return rate


if __name__ == "__main__":
    main()
