"""Training for the learned urgent tier: scikit-learn, in a process that never classifies.

Contract: ``train_data(examples) -> dict`` fits the char n-gram tf-idf + logistic
regression of ``intake.learned`` and returns the model as plain JSON-able data (n-gram ->
[idf, weight], intercept, threshold, cross-validation figures). ``python -m
intake.learned train`` runs :func:`main_train`: examples as a JSON list on stdin, the model
on stdout (``UrgencyModel.to_bytes``), exit status 3 with ``{"error": ...}`` when the
examples cannot train a model. It never logs or prints an example's words.

Why a separate module, run in a child process: importing scikit-learn, SciPy and NumPy
costs a worker ~110 MB that it would keep for its whole life, while the trained model is
a few thousand numbers. ``intake.learned`` starts this module as a subprocess, reads the
model's bytes and never imports it, so the process that classifies mail stays small. Tests
and the benchmark may import it directly (``intake.learned.train``) to compare against
scikit-learn's own ``predict_proba``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from intake.learned import (
    CHILD_KEY,
    FOLDS,
    MIN_CHARS,
    MIN_THRESHOLD,
    MODEL_FORMAT,
    SEED,
    SHORT_CHARS,
    SHORT_THRESHOLD,
    TARGET_RECALL,
    C,
    UrgencyModel,
    prepare,
    text_chars,
)


def vectorizer() -> TfidfVectorizer:
    """The vectoriser whose n-grams ``intake.learned.UrgencyModel`` reproduces by hand."""
    return TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=(2, 4),
        lowercase=False,  # prepare() already did
        sublinear_tf=True,
        min_df=2,  # an n-gram seen in one example is that example, not a pattern
        dtype=np.float32,
    )


def classifier() -> LogisticRegression:
    """Balanced because urgent mail is the class that must not be missed."""
    return LogisticRegression(
        class_weight="balanced", C=C, solver="liblinear", random_state=SEED, max_iter=1000
    )


def fit(docs: Sequence[str], labels: np.ndarray) -> tuple[TfidfVectorizer, LogisticRegression]:
    """Vectoriser and classifier fitted on prepared documents."""
    vec = vectorizer()
    x = vec.fit_transform(docs)
    clf = classifier().fit(x, labels)
    return vec, clf


def recall_threshold(scores: np.ndarray, labels: np.ndarray, target: float) -> float:
    """The highest threshold whose ``scores >= threshold`` catches ``target`` of positives."""
    positives = np.sort(scores[labels == 1])[::-1]
    if positives.size == 0:
        raise ValueError("no urgent examples to choose a threshold from")
    need = max(1, math.ceil(target * positives.size))
    return float(positives[need - 1])


def labels_of(examples: Sequence[dict[str, Any]]) -> np.ndarray:
    """1 for urgent examples, 0 for the others."""
    return np.array([1 if e["urgent"] else 0 for e in examples], dtype=np.int64)


def docs_of(examples: Sequence[dict[str, Any]]) -> list[str]:
    """The prepared text of each example, as the model reads it."""
    return [prepare(e.get("subject", ""), e.get("text", "")) for e in examples]


def train_data(
    examples: list[dict[str, Any]], *, target_recall: float = TARGET_RECALL, folds: int = FOLDS
) -> dict[str, Any]:
    """Fit the model on every example; pick the threshold by stratified k-fold CV.

    Raises ``ValueError`` when there are too few urgent or non-urgent examples to cross-
    validate (fewer than ``folds`` of either): a threshold chosen on no evidence would
    be a guess. The result is plain data (see ``intake.learned.UrgencyModel.from_data``);
    floats survive JSON exactly, so the worker scores with the very numbers fitted here.
    """
    labels = labels_of(examples)
    urgent = int(labels.sum())
    if urgent < folds or len(labels) - urgent < folds:
        raise ValueError(
            f"need at least {folds} urgent and {folds} non-urgent examples "
            f"(have {urgent} and {len(labels) - urgent})"
        )
    docs = docs_of(examples)
    oof = np.zeros(len(docs), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)
    for train_idx, test_idx in splitter.split(np.zeros(len(docs)), labels):
        vec, clf = fit([docs[i] for i in train_idx], labels[train_idx])
        oof[test_idx] = clf.predict_proba(vec.transform([docs[i] for i in test_idx]))[:, 1]
    threshold = max(recall_threshold(oof, labels, target_recall), MIN_THRESHOLD)
    flagged = oof >= threshold
    tp = int((flagged & (labels == 1)).sum())
    chars = np.array([text_chars(e.get("subject", ""), e.get("text", "")) for e in examples])
    short = (chars >= MIN_CHARS) & (chars < SHORT_CHARS)
    short_flagged = oof >= max(SHORT_THRESHOLD, threshold)
    short_urgent, short_calm = short & (labels == 1), short & (labels == 0)
    short_recall = float(short_flagged[short_urgent].mean()) if short_urgent.any() else None
    short_rate = float(short_flagged[short_calm].mean()) if short_calm.any() else None
    vec, clf = fit(docs, labels)
    sign = 1.0 if clf.classes_[1] == 1 else -1.0
    weights = sign * clf.coef_[0].astype(np.float64)
    idf = vec.idf_.astype(np.float64)
    grams = {str(gram): [float(idf[j]), float(weights[j])] for gram, j in vec.vocabulary_.items()}
    return {
        "format": MODEL_FORMAT,
        "threshold": threshold,
        "intercept": sign * float(clf.intercept_[0]),
        "cv": {
            "recall": tp / urgent,
            "precision": tp / int(flagged.sum()) if flagged.any() else 0.0,
            "examples": len(labels),
            "urgent": urgent,
            "folds": folds,
            "short_recall": short_recall,
            "short_flagged": short_rate,
            "short_examples": int(short.sum()),
        },
        "grams": grams,
    }


def main_train() -> int:
    """Examples (a JSON list) on stdin -> the model on stdout; 3 when they cannot train.

    The model goes out as ``UrgencyModel.to_bytes(CHILD_KEY)``, not as JSON: the worker
    reads those bytes straight into its arrays (decoding the JSON left it ~20 MB of heap
    fragments). The floats are the fitted float64 values, bit for bit, as in the JSON.
    """
    examples = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    try:
        data = train_data(examples)
    except ValueError as e:
        json.dump({"error": str(e)}, sys.stdout)
        return 3
    sys.stdout.buffer.write(UrgencyModel.from_data(data).to_bytes(CHILD_KEY))
    sys.stdout.flush()
    return 0
