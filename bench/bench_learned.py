"""The learned urgent tier, measured: rules alone, model alone, rules OR model.

Usage::

    .venv/bin/python bench/bench_learned.py                        # 5-fold CV on the examples
    .venv/bin/python bench/bench_learned.py --holdout4 --holdout5  # ... then the unseen corpora

Why nested cross-validation: the model picks its own threshold by CV on whatever it is
trained on, so each outer fold trains a full model (threshold included) on four fifths of
the examples and is scored on the fifth it never saw. The rules need no training; their
figures are the same on every fold, but they were written while reading every one of
these corpora, so their CV figure is an upper bound, not a generalisation measure.

``--holdout4`` / ``--holdout5`` train on all examples and score
``tests/data/triage_holdout4.jsonl`` / ``triage_holdout5.jsonl``, which no rule writer and
no model has seen. They print aggregates only: never read a holdout's lines, and never
tune anything after looking (see tests/data/README.md).

Also printed: training time (in this process), the cost per mail of ``learned_urgent``
(what triage calls; the explanation is computed only above the threshold) and of
``score`` (always explains), in CPU time per mail over bench_classify.py's 2 KB mails,
which stays comparable on a shared machine where wall time does not.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_classify import make_mail  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

from intake.learned import (  # noqa: E402
    EXAMPLES_FILE,
    FOLDS,
    SEED,
    learned_urgent,
    load_examples,
    train,
)
from intake.rules import load_rules  # noqa: E402
from intake.triage import classify_text  # noqa: E402


def figures(flags: np.ndarray, labels: np.ndarray) -> str:
    tp = int((flags & labels).sum())
    fp = int((flags & ~labels).sum())
    fn = int((~flags & labels).sum())
    recall = tp / (tp + fn) if tp + fn else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    return f"recall {recall:.3f} ({tp}/{tp + fn})  precision {precision:.3f}  fp {fp}  fn {fn}"


def report(title: str, rules: np.ndarray, model: np.ndarray, labels: np.ndarray) -> None:
    print(title)
    print(f"  (a) rules alone    {figures(rules, labels)}")
    print(f"  (b) model alone    {figures(model, labels)}")
    print(f"  (c) rules OR model {figures(rules | model, labels)}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--holdout4", action="store_true", help="also score unseen holdout 4")
    parser.add_argument("--holdout5", action="store_true", help="also score unseen holdout 5")
    args = parser.parse_args()

    examples = load_examples(ROOT / "rules" / EXAMPLES_FILE)
    labels = np.array([bool(e["urgent"]) for e in examples])
    ruleset = load_rules(ROOT / "rules")
    ruleset.learned = None  # (a) is the rule tiers alone; triage ORs the model in for (c)
    rules_flags = np.array(
        [classify_text(e.get("subject", ""), e["text"], ruleset).urgent for e in examples]
    )

    model_flags = np.zeros(len(examples), dtype=bool)
    splitter = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED + 1)
    for train_idx, test_idx in splitter.split(np.zeros(len(examples)), labels):
        model = train([examples[i] for i in train_idx])
        for i in test_idx:
            e = examples[i]
            model_flags[i] = learned_urgent(model, e.get("subject", ""), e["text"]) is not None
    report(
        f"{FOLDS}-fold nested CV on {len(examples)} examples ({int(labels.sum())} urgent)",
        rules_flags,
        model_flags,
        labels,
    )

    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        model = train(examples)
        times.append(time.perf_counter() - t0)
    cv = model.cv
    print(
        f"full model: threshold {model.threshold:.3f}; its own CV recall {cv.recall:.3f} "
        f"precision {cv.precision:.3f}; train {min(times):.2f} s (best of 3, CV included)"
    )
    rng = random.Random(7)
    mails = [make_mail(rng) for _ in range(500)]
    for name, work in (
        ("learned_urgent()", lambda text: learned_urgent(model, "相談", text)),
        ("score()", lambda text: model.score("相談", text)),
    ):
        best = float("inf")
        for _ in range(3):
            c0 = time.process_time()
            for text in mails:
                work(text)
            best = min(best, (time.process_time() - c0) / len(mails))
        print(f"{name}: {best * 1e6:.0f} us CPU per ~2 KB mail (best of 3 over {len(mails)})")
    c0 = time.process_time()
    for e in examples:
        learned_urgent(model, e.get("subject", ""), e["text"])
    per_example = (time.process_time() - c0) / len(examples)
    print(f"learned_urgent(): {per_example * 1e6:.0f} us CPU per example (mean)")

    for name in [
        n for n, wanted in (("holdout4", args.holdout4), ("holdout5", args.holdout5)) if wanted
    ]:
        rows: list[dict[str, Any]] = [
            json.loads(line)
            for line in (ROOT / "tests" / "data" / f"triage_{name}.jsonl")
            .read_text(encoding="utf-8")
            .splitlines()
            if line.strip()
        ]
        h_labels = np.array([bool(r["urgent"]) for r in rows])
        h_rules = np.array([classify_text(r["subject"], r["text"], ruleset).urgent for r in rows])
        h_model = np.array(
            [learned_urgent(model, r["subject"], r["text"]) is not None for r in rows]
        )
        report(
            f"{name} (unseen): {len(rows)} mails ({int(h_labels.sum())} urgent)",
            h_rules,
            h_model,
            h_labels,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
