"""The learned urgent tier, measured: rules alone, model alone, rules OR model.

Usage::

    .venv/bin/python bench/bench_learned.py              # 5-fold CV on rules/examples.jsonl
    .venv/bin/python bench/bench_learned.py --holdout4   # ... then the one unseen corpus

Why nested cross-validation: the model picks its own threshold by CV on whatever it is
trained on, so each outer fold trains a full model (threshold included) on four fifths of
the examples and is scored on the fifth it never saw. The rules need no training; their
figures are the same on every fold, but they were written while reading every one of
these corpora, so their CV figure is an upper bound, not a generalisation measure.

``--holdout4`` trains on all examples and scores ``tests/data/triage_holdout4.jsonl``,
which no rule writer and no model has seen. It prints aggregates only: never read the
holdout's lines, and never tune anything after looking (see tests/data/README.md).
Also printed: training time and the model's cost per mail.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

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
    parser.add_argument("--holdout4", action="store_true", help="also score the unseen corpus")
    args = parser.parse_args()

    examples = load_examples(ROOT / "rules" / EXAMPLES_FILE)
    labels = np.array([bool(e["urgent"]) for e in examples])
    ruleset = load_rules(ROOT / "rules")
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
    t0 = time.perf_counter()
    for e in examples:
        model.score(e.get("subject", ""), e["text"])
    per_mail = (time.perf_counter() - t0) / len(examples)
    print(f"score(): {per_mail * 1e6:.0f} us per mail (mean over the examples)")

    if args.holdout4:
        rows: list[dict[str, Any]] = [
            json.loads(line)
            for line in (ROOT / "tests" / "data" / "triage_holdout4.jsonl")
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
            f"holdout4 (unseen): {len(rows)} mails ({int(h_labels.sum())} urgent)",
            h_rules,
            h_model,
            h_labels,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
