"""Throughput of ``classify_text`` on synthetic ~2 KB mails (target: >= 2,000 mails/s/core).

Run: ``.venv/bin/python bench/bench_classify.py`` (``--stages``: CPU microseconds a
mail for each stage of classify, measured alone). The mails are generated from a small
vocabulary of synthetic sentences, shuffled per mail so that MeCab sees new lines (the
per-line caches in intake.lemmas only help for token lines, as in real mail).
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fugashi

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from intake.lemmas import get_analyser  # noqa: E402
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


def _interleaved(
    works: dict[str, Callable[[int], object]], seconds: float, slice_s: float = 0.1
) -> dict[str, tuple[int, float, float]]:
    """(calls done, per wall second, per CPU second) for each of ``works``, taking turns in
    slices of ``slice_s`` wall seconds.

    The CPU-time rate is what "mails/s on one core" means, and it stays meaningful on a
    shared machine where other processes steal wall time.

    Why turns: on a shared machine the load from other processes changes from second to
    second, and it slows every process's CPU second too (shared caches, SMT siblings).
    Measured one after the other, two stages saw different loads (the same code measured
    up to 20 % apart in two runs); taking turns gives each the same mix, so their ratio
    holds even when the rates do not.
    """
    done = dict.fromkeys(works, 0)
    wall = dict.fromkeys(works, 0.0)
    cpu = dict.fromkeys(works, 0.0)
    for _ in range(max(1, round(seconds / slice_s))):
        for name, work in works.items():
            n = done[name]
            wall0, cpu0 = time.perf_counter(), time.process_time()
            while time.perf_counter() - wall0 < slice_s:
                work(n)
                n += 1
            wall[name] += time.perf_counter() - wall0
            cpu[name] += time.process_time() - cpu0
            done[name] = n
    return {
        name: (done[name], done[name] / wall[name], done[name] / max(cpu[name], 1e-9))
        for name in works
    }


def main(seconds: float = 2.0) -> float:
    """Print classify rates with and without the learned tier, and their parts.

    All rates are per CPU second and measured in this one run, taking turns (see
    ``_interleaved``), so their ratios hold on a shared machine. "analyse" is
    ``Analyser.analyse`` (MeCab plus normalising); the rule tiers cost the difference
    between it and "classify, rules only". The last line is the ratio issue 7 is judged
    by here: classify's CPU time a mail over MeCab's (target: at most ~2x).
    """
    rules = load_rules(ROOT / "rules")
    learned = rules.learned
    rng = random.Random(7)
    mails = [make_mail(rng) for _ in range(500)]
    classify_text("相談", mails[0], rules)  # warm up the analyser
    analyser = get_analyser()
    tagger = fugashi.Tagger()

    def rules_only(i: int) -> object:
        rules.learned = None
        try:
            return classify_text("相談", mails[i % len(mails)], rules)
        finally:
            rules.learned = learned

    rates = _interleaved(
        {
            "mecab": lambda i: tagger.parse(mails[i % len(mails)]),
            "analyse": lambda i: analyser.analyse("相談\n" + mails[i % len(mails)]),
            "rules": rules_only,
            "classify": lambda i: classify_text("相談", mails[i % len(mails)], rules),
        },
        seconds,
    )
    _, mecab_wall, mecab_cpu = rates["mecab"]
    analyse_cpu = rates["analyse"][2]
    rules_cpu = rates["rules"][2]
    done, wall, cpu = rates["classify"]
    size = sum(len(m.encode()) for m in mails) / len(mails)
    tier = "with the learned tier" if learned is not None else "(no learned tier loaded)"
    print(
        f"{done} mails of ~{size:.0f} bytes: {cpu:,.0f} mails/s per CPU second {tier} "
        f"({wall:,.0f}/s wall); rules only {rules_cpu:,.0f}/s; Analyser.analyse "
        f"{analyse_cpu:,.0f}/s; MeCab parse alone {mecab_cpu:,.0f}/s per CPU second "
        f"({mecab_wall:,.0f}/s wall)"
    )
    print(
        f"CPU time a mail over MeCab parse alone: classify {mecab_cpu / cpu:.2f}x, rules "
        f"only {mecab_cpu / rules_cpu:.2f}x, Analyser.analyse {mecab_cpu / analyse_cpu:.2f}x "
        "(target for classify: at most ~2x)"
    )
    return cpu


def stages(rounds: int = 3) -> dict[str, float]:
    """Print CPU microseconds a mail for each stage of ``classify_text``, measured alone.

    Each stage runs on the same 300 mails, on inputs prepared by the stages before it
    (analyses, then hits, then discounted hits), best of ``rounds``. Alone, a stage
    keeps its data in the CPU caches that MeCab evicts inside classify, so the parts add
    up to less than a whole classify: they show where the time goes, not the total.
    """
    from intake import triage

    rules = load_rules(ROOT / "rules")
    learned = rules.learned
    rules.learned = None
    rng = random.Random(7)
    texts = ["相談\n" + make_mail(rng) for _ in range(300)]
    analyser = get_analyser()
    analyses = [analyser.analyse(t) for t in texts]
    found = [triage._find(a, rules) for a in analyses]

    def fresh(i: int) -> list[triage._Hit]:
        return [triage._Hit(h.pattern, h.first, h.last) for h in found[i]]

    judged = [fresh(i) for i in range(len(texts))]
    for a, hits in zip(analyses, judged, strict=True):
        triage._discount(a, hits, rules)

    # the topic and signal hits as classify hands them on (in hit order)
    topics = [[h for h in hits if h.pattern.kind == "topic"] for hits in judged]
    signals = [[h for h in hits if h.pattern.kind == "signal"] for hits in judged]

    def evidence(i: int) -> None:
        triage._kept_evidence(analyses[i], judged[i])

    def learned_tier(i: int) -> None:
        if learned is not None:
            triage._learned_match(learned, "相談", texts[i][3:], texts[i], analyses[i].normalised)

    parts: dict[str, Callable[[int], object]] = {
        "Analyser.analyse": lambda i: analyser.analyse(texts[i]),
        "find patterns": lambda i: triage._find(analyses[i], rules),
        "few-words length filter": lambda i: triage._for_length(
            found[i], "相談", texts[i][3:], rules.few_words_ids, rules.longest_max_chars
        ),
        "discount (with a copy of the hits)": lambda i: triage._discount(
            analyses[i], fresh(i), rules
        ),
        "  of which copying the hits": fresh,
        "evidence (spans, Match, kinds)": evidence,
        "language": lambda i: triage.detect_language(texts[i]),
        "signal combinations": lambda i: triage._signal_matches(
            analyses[i], signals[i], texts[i], "ja", rules
        ),
        "reading tier pre-check": lambda i: triage._reading_may_match(analyses[i], rules, "相談"),
        "topic scores": lambda i: triage._score(topics[i], analyses[i], 2, 1.5),
        "learned tier": learned_tier,
        "classify_text, rules only": lambda i: classify_text("相談", texts[i][3:], rules),
    }
    figures: dict[str, float] = {}
    for name, work in parts.items():
        best = float("inf")
        for _ in range(rounds):
            cpu0 = time.process_time()
            for i in range(len(texts)):
                work(i)
            best = min(best, time.process_time() - cpu0)
        figures[name] = best / len(texts) * 1e6
        print(f"{name:38s} {figures[name]:7.1f} us CPU a mail")
    print(f"({sum(len(h) for h in found) / len(found):.0f} pattern hits a mail)")
    rules.learned = learned
    print("\nInside classify_text (with the learned tier), CPU us a mail:")
    inside = inside_classify(rules, texts, rounds)
    for name, us in inside.items():
        print(f"{name:38s} {us:7.1f} us CPU a mail")
    return figures


# The stages of classify_text timed in place by ``inside_classify``: (label, module or
# object that classify looks the function up on, attribute).
_INSIDE = [
    ("Analyser.analyse", None, "analyse"),
    ("find patterns", "triage", "_find"),
    ("few-words length filter", "triage", "_for_length"),
    ("discount", "triage", "_discount"),
    ("evidence (spans, Match, kinds)", "triage", "_kept_evidence"),
    ("language", "triage", "detect_language"),
    ("signal combinations", "triage", "_signal_matches"),
    ("reading tier (pre-check and hits)", "triage", "_reading_hits"),
    ("learned tier", "triage", "_learned_match"),
    ("topic scores", "triage", "_score"),
]


def inside_classify(rules: Any, texts: list[str], rounds: int = 3) -> dict[str, float]:
    """CPU us a mail that each stage takes *inside* ``classify_text``, and the whole.

    Why as well as the stages alone: a stage timed alone runs the same code on the same
    inputs again and again, and inside classify it does not. Measured taking turns on
    this machine, the learned tier cost ~1.6x and pattern finding ~1.3x their figures
    alone; analysing a batch of mails first and judging them after did not remove that,
    so it is not MeCab's cache eviction alone. A stage also runs only on the mails that
    reach it (the reading and learned tiers speak only when nothing else found a
    crisis). Each stage function is wrapped with a CPU timer for the run (two clock
    reads a stage) and restored after.
    """
    from intake import triage

    analyser = get_analyser()
    spent = {name: 0.0 for name, _, _ in _INSIDE}
    owners: dict[str, Any] = {}
    originals: dict[str, Any] = {}
    for name, owner_name, attr in _INSIDE:
        owner = analyser if owner_name is None else triage
        owners[name] = owner
        fn = originals[name] = getattr(owner, attr)

        def timed(*args: Any, _fn: Any = fn, _name: str = name, **kwargs: Any) -> Any:
            cpu0 = time.process_time()
            try:
                return _fn(*args, **kwargs)
            finally:
                spent[_name] += time.process_time() - cpu0

        setattr(owner, attr, timed)
    total = 0.0
    try:
        for _ in range(rounds):
            cpu0 = time.process_time()
            for text in texts:
                classify_text("相談", text[3:], rules)
            total += time.process_time() - cpu0
    finally:
        for name, _, attr in _INSIDE:
            if owners[name] is analyser:
                del analyser.analyse  # the instance attribute shadowed the method
            else:
                setattr(triage, attr, originals[name])
    mails = rounds * len(texts)
    figures = {name: spent[name] / mails * 1e6 for name in spent}
    figures["rest of classify_text"] = (total - sum(spent.values())) / mails * 1e6
    figures["classify_text, with the learned tier"] = total / mails * 1e6
    return figures


if __name__ == "__main__":
    if "--stages" in sys.argv[1:]:
        stages()
    else:
        main()
