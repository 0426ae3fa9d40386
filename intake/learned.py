"""A learned urgent tier: character n-grams + logistic regression, trained on examples.

Contract: ``load_model(rules_dir) -> UrgencyModel | None`` trains a model on
``rules_dir/examples.jsonl`` (None when the file is absent); ``learned_urgent(model,
subject, text)`` returns the n-grams that explain an urgent score, or None. It is meant
to be OR-ed with the rule tiers of ``intake.triage``: it can only ADD urgency, never
remove it, and it never decides a topic. It never logs the mail's words. This module
never imports scikit-learn or SciPy: training runs them in a child process
(``intake.learned_train``) and the model the worker keeps is plain data (NumPy arrays).

Why a statistical tier next to the rules: the keyword tiers reach urgent recall 1.0 on
every corpus their authors could read, but each new phrasing of a crisis needs a new
rule, and on a corpus nobody had read they miss far more. Character n-grams of the
normalised, hiragana-folded text need no tokeniser and no rule per phrasing: 「しにてぇ」,
「死にたみ」 and 「4ぬ」 share n-grams with spellings staff have already labelled.

Why these choices:

* ``TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4))`` on the text after
  ``intake.lemmas.normalise`` (width, elongation) and ``to_hiragana`` (シニタイ = しにたい):
  the same folding the rules see, so a spelling variant is not a new feature.
* ``LogisticRegression(class_weight="balanced")``: a linear model whose weights say which
  n-grams pushed a mail up, which is the explanation staff see; balanced because urgent
  mail is the minority class and the class that must not be missed.
* The decision threshold is chosen by stratified 5-fold cross-validation on the examples
  themselves: the highest threshold at which the out-of-fold scores still catch
  ``TARGET_RECALL`` of the urgent examples. A default of 0.5 would trade recall for
  precision, which is the wrong trade when a miss can cost a life.
* Training happens at load time (~6 s of CPU for ~4,300 examples, in a child process), so
  staff teach the service by adding a line to ``rules/examples.jsonl`` and restarting it;
  there is no pickled model that could drift from its examples or run code on load. The
  child's model is kept in memory and in a cache file (see ``cache_dir``) keyed by the
  SHA-256 of the examples, the training code and the library versions, so a restart or a
  test that loads the rules again does not train again; a cache that does not parse, is
  truncated or damaged, or does not match its key is ignored and rebuilt. Child and cache
  hand the model over in a compact layout (``UrgencyModel.to_bytes``: a JSON header, then
  NumPy arrays' bytes and the n-grams as one string), not JSON: decoding 85,000 n-grams
  from JSON left ~20 MB of freed fragments in the worker's heap for good.
* Scoring reproduces ``TfidfVectorizer.transform`` + ``predict_proba`` without them:
  the mail's 2-, 3- and 4-grams become integers read straight from its UTF-16 bytes
  (overlapping NumPy views), are looked up in the sorted vocabulary keys and counted in
  a few NumPy calls (~0.1 ms for a 2 KB mail; the scikit-learn-era Python loop took
  ~0.5 ms, and a pure-Python ``Counter`` over int keys measured ~0.4 ms, hence NumPy,
  which costs the worker ~15 MB where scikit-learn + SciPy cost ~110 MB). The
  explanation is computed only for mail above the threshold. ``test_learned`` holds the
  scores equal to scikit-learn's ``predict_proba``.

Staff add an example by appending one JSON line to ``rules/examples.jsonl``:
``{"id": "s001", "subject": "...", "text": "...", "urgent": true, "topic": "isolation"}``
(ids must be unique; never renumber). ``python -m intake.learned rebuild`` regenerates
the file from the labelled corpora in ``tests/data`` (and drops staff lines: keep them in
``tests/data`` or re-append them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import stat
import subprocess
import sys
import tempfile
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from intake.errors import Problem, RulesError
from intake.lemmas import normalise, to_hiragana

EXAMPLES_FILE = "examples.jsonl"

# The labelled corpora the shipped examples are built from. ``triage_holdout4`` to ``9``
# are deliberately absent: they are the corpora neither the rules nor this model have
# seen, the only honest measure of how triage does on mail nobody wrote rules for.
SOURCE_FILES = (
    "triage_dev.jsonl",
    "triage_dev_extra.jsonl",
    "triage_holdout.jsonl",
    "triage_holdout2.jsonl",
    "triage_holdout3.jsonl",
    "triage_dev_extra2.jsonl",
    "triage_dev_extra3.jsonl",
    "triage_dev_extra4.jsonl",
    "triage_dev_extra5.jsonl",
    "triage_dev_extra6.jsonl",
    "triage_dev_extra7.jsonl",
    "triage_dev_extra8.jsonl",
    "triage_dev_extra9.jsonl",
    "triage_dev_extra10.jsonl",
    "triage_dev_extra11.jsonl",
    "triage_dev_extra12.jsonl",
    "triage_dev_extra13.jsonl",
    "triage_dev_extra14.jsonl",
)
UNSEEN_FILES = (
    "triage_holdout4.jsonl",
    "triage_holdout5.jsonl",
    "triage_holdout6.jsonl",
    "triage_holdout7.jsonl",
    "triage_holdout8.jsonl",
    "triage_holdout9.jsonl",
)
KEPT_FIELDS = ("id", "subject", "text", "urgent", "topic")

TARGET_RECALL = 0.97  # out-of-fold recall the threshold must reach on the examples
# The examples over-represent crises (about half are urgent; a real mailbox has a few per
# cent), so the CV threshold alone flagged ~30 % of ordinary consultations (bench mails and
# tests/mails) as urgent: alert fatigue is a risk to life too. Measured by the lead on
# 2026-11-26: a floor of 0.5 flagged ~3 % of generated ordinary mail but also a plain
# "lost my job, can't pay rent" consultation; 0.7 flags < 1 % and keeps unseen-holdout
# recall at ~0.82 (rules alone: 0.61). Lower it to catch more, raise it if on-call floods.
MIN_THRESHOLD = 0.7
# Mail length, in characters without spaces (``text_chars``). On short mails single
# n-grams swing the score, so a mail under SHORT_CHARS must reach the stricter
# SHORT_THRESHOLD, and under MIN_CHARS the tier stays silent (three or four characters are
# no statistics; the phrase rules decide those). Why read short mail at all: the rules
# alone missed 25 of the 104 short urgent training mails (bare verbs, hiragana runs MeCab
# splits oddly, slang). Measured out of fold on the 4,305 examples (``python -m
# intake.learned cv`` prints it), mails of 10-29 characters: 0.9 catches 0.30 of the short
# urgent ones and flags 1.0 % of the short non-urgent ones, 0.93 0.19 and none,
# 0.85 0.44 and 2.3 %, the usual 0.7 flags 12 %. 0.93 because at 0.9 the model trained on
# these examples alerts on 橋の上から花火を見た under the subject 相談 (0.92), an everyday
# mail the tests hold to not urgent.
MIN_CHARS = 10
SHORT_CHARS = 30
SHORT_THRESHOLD = 0.93
FOLDS = 5
SEED = 0  # fixed: the same examples always give the same model and threshold
C = 10.0  # inverse regularisation; chosen by cross-validation on the examples only
MAX_EXPLAIN = 5  # words shown in an explanation
_TOP_FEATURES = 12  # n-grams merged into those words
MODEL_FORMAT = 2  # bump when the model's JSON layout or its training changes meaning
CACHE_ENV = "SOUDAN_INTAKE_CACHE_DIR"  # where trained models are cached (see cache_dir)
# First bytes of the compact model layout (``UrgencyModel.to_bytes``); the digit is the
# layout's version. The cache key covers this module's source, so a new layout also
# gets new file names: old files are never read, only left behind.
BYTES_MAGIC = b"soudan-intake learned model 1\n"
CACHE_SUFFIX = ".model"  # cache file name: the cache key, then this (JSON was ".json")
CHILD_KEY = ""  # the key the training child writes: it does not compute the cache key
TRAIN_TIMEOUT = 600  # seconds the training child may take before load fails

# Katakana that ``to_hiragana`` folds; only these runs are translated (see ``prepare``).
_KATAKANA = re.compile("[\u30a1-\u30f6]+")


def _hiragana_runs(m: re.Match[str]) -> str:
    return to_hiragana(m.group())


def prepare(subject: str, text: str) -> str:
    """The text the model sees: subject and body, normalised, kana folded, lower case.

    ``to_hiragana`` maps one character to one, and the subject/body separator is a newline
    so char_wb n-grams never join the subject's last word to the body's first.
    """
    return _fold(shown(subject, text))


def _fold(original: str) -> str:
    """``to_hiragana(original).lower()``, translating only the katakana runs.

    ``str.translate`` looks every character up in a dict (~30 us for a 2 KB mail, a third
    of scoring); the regex finds the few katakana runs in C. ``test_learned`` holds the
    two equal on the whole katakana block.
    """
    return _KATAKANA.sub(_hiragana_runs, original).lower()


def shown(subject: str, text: str) -> str:
    """The normalised mail before kana folding: what explanations quote from."""
    return normalise(subject + "\n" + text)[0]


@dataclass(frozen=True)
class CVFigures:
    """Out-of-fold recall and precision at the chosen threshold, for the report.

    ``short_*``: the same for the examples of ``MIN_CHARS`` to ``SHORT_CHARS`` - 1
    characters, at the stricter ``SHORT_THRESHOLD`` they must reach: the share of short
    urgent examples caught and of short non-urgent ones flagged (None: none that short).
    """

    recall: float
    precision: float
    examples: int
    urgent: int
    folds: int
    short_recall: float | None = None
    short_flagged: float | None = None
    short_examples: int = 0


# -- n-grams as integers ----------------------------------------------------------------
# A gram of 2 or 4 characters is 4 or 8 bytes of UTF-16, so uint32/uint64 views with a
# stride of one character read every 2- and 4-gram of a mail as an int; a 3-gram is its
# 4-gram with the last character masked off. UTF-16 has one unit per character only
# in the BMP outside the surrogates, so characters outside that (emoji, lone surrogates),
# private-use characters, NUL and U+FFFE/FFFF are folded first: those the vocabulary uses
# get a private-use code of their own, all others one "unknown" code no gram contains.
# Without NUL, a 2-gram key is < 2**32 <= a 3-gram key < 2**48 <= a 4-gram key, so one
# sorted key array holds all three sizes without collisions. Three sentinel characters
# after the text let every offset read a full 4-gram; n-grams with a sentinel never match.
_NATIVE = sys.byteorder == "little"
_UTF16 = "utf-16-le" if _NATIVE else "utf-16-be"
# 4-gram key -> key of its first three characters
_TO_3 = np.bitwise_and if _NATIVE else np.right_shift
_TO_3_ARG = np.uint64((1 << 48) - 1 if _NATIVE else 16)
_SPECIAL = re.compile("[\x00\ud800-\udfff\ue000-\uf8ff\ufffe\uffff\U00010000-\U0010ffff]")
_PRIVATE_FIRST, _PRIVATE_LAST = 0xE000, 0xF8FF


def _key(folded: str) -> int:
    """The int a (folded) 2-, 3- or 4-gram has in the mail's key stream."""
    return int.from_bytes(folded.encode(_UTF16), sys.byteorder)


def _keys(folded: str, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``_key`` of every n-gram ``folded[start : start + length]``, without slicing one.

    The same integers, built from the UTF-16 units of the whole (folded) string: unit
    ``k`` of a gram is its ``k``-th 16-bit digit, from the low end on a little-endian
    machine and from the high end on a big-endian one, as ``int.from_bytes`` reads them.
    """
    units = np.frombuffer(folded.encode(_UTF16), dtype=np.uint16).astype(np.uint64)
    keys = np.zeros(len(starts), dtype=np.uint64)
    for k in range(4):
        has = lengths > k
        digit = units[starts[has] + k]
        if _NATIVE:
            keys[has] |= digit << np.uint64(16 * k)
        else:
            keys[has] |= digit << (16 * (lengths[has] - 1 - k)).astype(np.uint64)
    return keys


class UrgencyModel:
    """A trained model as plain data: n-gram -> (idf, weight), intercept, threshold.

    Built from the JSON that ``intake.learned_train`` computes (``from_data``) or from the
    compact bytes of ``to_bytes`` (what the cache file and the training child hold); holds
    no scikit-learn object, so unpickling, versions and import cost never reach the worker.
    """

    def __init__(
        self,
        grams: Mapping[str, Sequence[float]],
        intercept: float,
        threshold: float,
        cv: CVFigures,
    ) -> None:
        # No dict of the grams is kept: at 73,000 n-grams it cost the worker ~16 MB, and
        # the arrays below hold the same numbers (``to_data`` rebuilds it on demand).
        # Plain lists and NumPy arrays: a list of 73,000 Python tuples here (and a dict of
        # the grams) raised the worker's peak by ~20 MB.
        texts: list[str] = []
        numbers: list[float] = []
        for gram, (idf, weight) in grams.items():
            texts.append(str(gram))
            numbers += (float(idf), float(weight))
        pairs = np.array(numbers, dtype=np.float64).reshape(-1, 2)
        ends = np.cumsum([len(g) for g in texts], dtype=np.int64)
        self._set("".join(texts), ends, pairs[:, 0], pairs[:, 1], intercept, threshold, cv)

    def _set(
        self,
        gram_text: str,
        gram_end: np.ndarray,
        idf: np.ndarray,
        weight: np.ndarray,
        intercept: float,
        threshold: float,
        cv: CVFigures,
    ) -> None:
        """Check and keep the n-grams (joined, with end offsets) and their numbers.

        Any order; sorted here by key. The keys are computed from the n-grams, never read
        from a file, so a cache file cannot hold keys that disagree with its n-grams.
        """
        n = len(gram_end)
        if not len(idf) == len(weight) == n or int(gram_end[-1] if n else 0) != len(gram_text):
            raise ValueError("model arrays of different lengths")
        lengths = np.diff(gram_end, prepend=np.int64(0))
        if n and not ((lengths >= 2) & (lengths <= 4)).all():
            raise ValueError("n-gram of fewer than 2 or more than 4 characters in the model")
        self.intercept = float(intercept)
        self.threshold = float(threshold)
        self.cv = cv
        specials = sorted(set(_SPECIAL.findall(gram_text)))
        if len(specials) + 2 > _PRIVATE_LAST - _PRIVATE_FIRST + 1:
            raise ValueError("too many emoji or private-use characters in the vocabulary")
        self._special_code = {c: chr(_PRIVATE_FIRST + i) for i, c in enumerate(specials)}
        self._unknown = chr(_PRIVATE_FIRST + len(specials))
        self._sentinel = chr(_PRIVATE_FIRST + len(specials) + 1) * 3
        starts = gram_end - lengths
        keys = _keys(self._fold_special(gram_text), starts, lengths)
        if n > 1 and not (keys[1:] > keys[:-1]).all():
            order = np.argsort(keys, kind="stable")
            keys = keys[order]
            if not (keys[1:] > keys[:-1]).all():
                raise ValueError("two n-grams of the model have the same key")
            # The n-grams as one string and their end offsets, not 85,000 small str
            # objects: those stayed scattered among the decoded JSON's freed lists and
            # floats and kept ~20 MB of the worker's heap from being reused.
            bounds = zip(starts[order].tolist(), gram_end[order].tolist(), strict=True)
            gram_text = "".join([gram_text[a:b] for a, b in bounds])
            gram_end = np.cumsum(lengths[order], dtype=np.int64)
            idf, weight = idf[order], weight[order]
        self._keys = keys  # sorted
        self._idf = np.array(idf, dtype=np.float64)  # own, aligned, native-order copies
        self._weight = np.array(weight, dtype=np.float64)
        self._gram_text = gram_text
        self._gram_end = np.array(gram_end, dtype=np.int64)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> UrgencyModel:
        """The model from ``learned_train.train_data``'s JSON; ``ValueError`` if malformed."""
        try:
            if data["format"] != MODEL_FORMAT:
                raise ValueError(f"model format {data['format']!r}, expected {MODEL_FORMAT}")
            cv = CVFigures(**data["cv"])
            return cls(data["grams"], float(data["intercept"]), float(data["threshold"]), cv)
        except (KeyError, TypeError, IndexError, AttributeError) as e:
            raise ValueError(f"malformed model data ({e!r})") from e

    def to_data(self) -> dict[str, Any]:
        """The inverse of ``from_data`` (the model as JSON-able data, n-grams in key order)."""
        return {
            "format": MODEL_FORMAT,
            "threshold": self.threshold,
            "intercept": self.intercept,
            "cv": asdict(self.cv),
            "grams": {
                self._gram(i): [idf, weight]
                for i, (idf, weight) in enumerate(
                    zip(self._idf.tolist(), self._weight.tolist(), strict=True)
                )
            },
        }

    def to_bytes(self, key: str) -> bytes:
        """The model in the compact layout of the cache file, labelled with ``key``.

        ``BYTES_MAGIC``, one line of JSON header (key, format, threshold, intercept, CV
        figures, sizes and the SHA-256 of the body), then the body: idf and weight as
        little-endian float64, the n-grams' end offsets as little-endian int64, and the
        n-grams joined as UTF-8 (``surrogatepass``: a lone surrogate is a character
        too). Loading it makes a handful of objects where the JSON made ~400,000, whose
        freed remains the worker kept (see ``from_bytes``). No pickle: reading it runs
        no code.
        """
        body = b"".join(
            (
                self._idf.astype("<f8").tobytes(),
                self._weight.astype("<f8").tobytes(),
                self._gram_end.astype("<i8").tobytes(),
                self._gram_text.encode("utf-8", "surrogatepass"),
            )
        )
        header = {
            "key": key,
            "format": MODEL_FORMAT,
            "threshold": self.threshold,
            "intercept": self.intercept,
            "cv": asdict(self.cv),
            "grams": len(self._gram_end),
            "body": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        line = json.dumps(header, ensure_ascii=True, allow_nan=False).encode("ascii")
        return BYTES_MAGIC + line + b"\n" + body

    @classmethod
    def from_bytes(cls, raw: bytes, key: str) -> UrgencyModel:
        """The model ``to_bytes(key)`` wrote; ``ValueError`` if anything does not match.

        A wrong magic, a header that is not the expected JSON, another key or format, a
        body of another length (a torn write) or checksum (a damaged file), arrays that
        do not fit together: all ``ValueError``, never a model built from part of a file.
        """
        if not raw.startswith(BYTES_MAGIC):
            raise ValueError("not a model file")
        eol = raw.find(b"\n", len(BYTES_MAGIC))
        if eol < 0:
            raise ValueError("model file without a header")
        try:
            header = json.loads(raw[len(BYTES_MAGIC) : eol].decode("ascii"))
            if not isinstance(header, dict) or header.get("key") != key:
                raise ValueError("model file for another key")
            if header["format"] != MODEL_FORMAT:
                raise ValueError(f"model format {header['format']!r}, expected {MODEL_FORMAT}")
            n, size = header["grams"], header["body"]
            if type(n) is not int or type(size) is not int or not 0 <= 24 * n <= size:
                raise ValueError("model file with impossible sizes")
            body = memoryview(raw)[eol + 1 :]
            if len(body) != size or hashlib.sha256(body).hexdigest() != header["sha256"]:
                raise ValueError("model file truncated or damaged")
            idf = np.frombuffer(body, dtype="<f8", count=n)
            weight = np.frombuffer(body, dtype="<f8", count=n, offset=8 * n)
            ends = np.frombuffer(body, dtype="<i8", count=n, offset=16 * n)
            text = bytes(body[24 * n :]).decode("utf-8", "surrogatepass")
            if n and not (np.isfinite(idf).all() and np.isfinite(weight).all()):
                raise ValueError("model file with a number that is not finite")
            model = cls.__new__(cls)
            model._set(
                text,
                ends,
                idf,
                weight,
                float(header["intercept"]),
                float(header["threshold"]),
                CVFigures(**header["cv"]),
            )
            return model
        except (KeyError, TypeError, IndexError, AttributeError, UnicodeDecodeError) as e:
            raise ValueError(f"malformed model file ({e!r})") from e

    def _gram(self, i: int) -> str:
        """The model's ``i``-th n-gram (in key order)."""
        start = int(self._gram_end[i - 1]) if i else 0
        return self._gram_text[start : int(self._gram_end[i])]

    def _fold_special(self, text: str) -> str:
        return _SPECIAL.sub(lambda m: self._special_code.get(m.group(), self._unknown), text)

    def _present(self, doc: str) -> tuple[str, np.ndarray, np.ndarray]:
        """(joined words, vocabulary indices, counts) of the char_wb 2-4-grams of ``doc``.

        ``TfidfVectorizer(analyzer="char_wb")`` pads each whitespace-separated word with
        one space and takes the n-grams inside it; here the words are joined by single
        spaces and n-grams are taken across the whole string. The extra n-grams that
        straddle two words have a space inside, which no vocabulary n-gram has, so the
        lookup in the vocabulary drops them. The n-grams are read as integers from the
        folded text's UTF-16 bytes by overlapping strided views (2 bytes apart), counted
        with ``unique`` and looked up with one ``searchsorted`` in the sorted vocabulary
        keys: a few NumPy calls per mail instead of a Python step per n-gram.
        """
        joined = " " + " ".join(doc.split()) + " "
        data = (self._fold_special(joined) + self._sentinel).encode(_UTF16)
        n = len(joined)
        fours = np.ndarray((n,), dtype=np.dtype("=u8"), buffer=data, strides=(2,))
        twos = np.ndarray((n,), dtype=np.dtype("=u4"), buffer=data, strides=(2,))
        keys, counts = np.unique(
            np.concatenate((twos, _TO_3(fours, _TO_3_ARG), fours)), return_counts=True
        )
        # Counting first and searching the (sorted) distinct keys touches the 150 KB key
        # array less: inside classify, after MeCab has filled the caches, this measured
        # 114 us a mail against 146 us for searching every n-gram and counting the hits.
        vocab = self._keys
        at = np.searchsorted(vocab, keys)
        np.minimum(at, len(vocab) - 1, out=at)
        hit = vocab[at] == keys
        return joined, at[hit], counts[hit]

    def _weigh(self, doc: str) -> tuple[float, str, np.ndarray, np.ndarray]:
        """(z, joined words, present vocabulary indices, their tf-idf values).

        tf-idf with ``sublinear_tf``: (1 + ln tf) * idf, L2-normalised over the n-grams
        present; z is their dot product with the weights plus the intercept, as
        ``TfidfVectorizer.transform`` + ``LogisticRegression.decision_function`` do it.
        """
        joined, indices, counts = self._present(doc)
        if indices.size == 0:
            return self.intercept, joined, indices, np.zeros(0)
        values = (1.0 + np.log(counts)) * self._idf[indices]
        values /= math.sqrt(float(values @ values))
        return float(values @ self._weight[indices]) + self.intercept, joined, indices, values

    def probability(self, subject: str, text: str, *, normalised: str | None = None) -> float:
        """The urgent probability alone (no explanation): what most mail needs.

        ``normalised``: ``shown(subject, text)`` when the caller has it (classify's
        analyser normalised the same string), so it is not made a second time.
        """
        if normalised is None:
            normalised = shown(subject, text)
        return _sigmoid(self._weigh(_fold(normalised))[0])

    def score(
        self, subject: str, text: str, *, normalised: str | None = None
    ) -> tuple[float, list[str]]:
        """The urgent probability and the words of the mail that raised it most.

        The words are the strongest positively weighted n-grams present in the prepared
        text, merged where they overlap (しに + にたい -> しにたい), strongest first. They
        are substrings of ``shown(subject, text)`` (the mail after width and elongation
        folding; for most mail the mail itself), so ホーム is quoted as written although
        the model read ほーむ. ``normalised``: as for ``probability``.
        """
        original = shown(subject, text) if normalised is None else normalised
        doc = _fold(original)
        z, joined, indices, values = self._weigh(doc)
        if len(doc) != len(original):
            original = doc  # lower() changed a length (rare letters): quote what was read
        return _sigmoid(z), self._explain(doc, original, joined, indices, values)

    def _top(self, joined: str, indices: np.ndarray, values: np.ndarray) -> list[tuple[float, str]]:
        """(contribution, n-gram) of the ``_TOP_FEATURES`` that raised z the most.

        Ties are broken as a stable argsort over the analyzer's order would (first
        occurrence: word, then n-gram length, then offset), which is what the
        scikit-learn-era implementation did, so the chosen set is the same.
        """
        contrib = (values * self._weight[indices]).tolist()
        gram = self._gram
        ranked = sorted(
            ((c, gram(i)) for c, i in zip(contrib, indices.tolist(), strict=True) if c > 0),
            key=lambda cg: -cg[0],
        )
        top = _TOP_FEATURES
        if len(ranked) > top and ranked[top - 1][0] == ranked[top][0]:
            ranked.sort(key=lambda cg: (-cg[0], _analyzer_rank(joined, cg[1])))
        return ranked[:top]

    def _explain(
        self, doc: str, original: str, joined: str, indices: np.ndarray, values: np.ndarray
    ) -> list[str]:
        spans: list[tuple[int, int, float]] = []
        for c, padded in self._top(joined, indices, values):
            gram = padded.strip()
            if len(gram) < 2:
                continue  # a lone character padded by char_wb explains nothing
            start = doc.find(gram)
            while start >= 0:
                spans.append((start, start + len(gram), c))
                start = doc.find(gram, start + 1)
        if not spans:
            return []
        spans.sort()
        merged: list[list[Any]] = []
        for start, end, c in spans:
            if merged and start < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
                merged[-1][2] += c
            else:
                merged.append([start, end, c])
        ranked = sorted(merged, key=lambda m: (-m[2], m[0]))
        words: list[str] = []
        for start, end, _ in ranked:
            word = original[start:end].strip()
            if word and word not in words:
                words.append(word)
            if len(words) == MAX_EXPLAIN:
                break
        return words


def _analyzer_rank(joined: str, gram: str) -> tuple[int, int, int]:
    """Where char_wb first emits ``gram``: (word index, n-gram length, offset in word)."""
    pos = joined.find(gram)
    word_start = joined.rfind(" ", 0, pos + 1)
    return joined.count(" ", 0, word_start), len(gram), pos - word_start


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def train(examples: list[dict[str, Any]]) -> UrgencyModel:
    """Train in this process (imports scikit-learn): for tests and benchmarks only.

    ``load_model`` trains in a child process instead, so that the worker never imports
    scikit-learn; both give the same model for the same examples.
    """
    from intake.learned_train import train_data

    # through JSON and the compact bytes, as the training child's model reaches the worker
    model = UrgencyModel.from_data(json.loads(json.dumps(train_data(examples))))
    return UrgencyModel.from_bytes(model.to_bytes(CHILD_KEY), CHILD_KEY)


def load_examples(path: Path) -> list[dict[str, Any]]:
    """Read and check an examples file; raise ``RulesError`` naming every bad line."""
    problems: list[Problem] = []
    examples: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(Problem(path, n, f"not JSON ({e.msg}); one object per line"))
            continue
        if not isinstance(row, dict):
            problems.append(Problem(path, n, "expected a JSON object"))
            continue
        if not isinstance(row.get("urgent"), bool):
            problems.append(Problem(path, n, '"urgent" must be true or false'))
            continue
        if not isinstance(row.get("subject", ""), str) or not isinstance(row.get("text"), str):
            problems.append(Problem(path, n, '"text" (and "subject" if given) must be strings'))
            continue
        ident = row.get("id")
        if isinstance(ident, str):
            if ident in seen:
                problems.append(
                    Problem(path, n, f"duplicate id {ident!r} (first on line {seen[ident]})")
                )
                continue
            seen[ident] = n
        examples.append(row)
    if problems:
        raise RulesError(problems)
    return examples


# -- training in a child process, remembered ------------------------------------------
_MEMO: dict[str, UrgencyModel] = {}  # cache key -> model, for this process's lifetime


def cache_dir() -> Path:
    """Where trained models are cached: ``$SOUDAN_INTAKE_CACHE_DIR``, else XDG's cache.

    ``$XDG_CACHE_HOME/soudan-intake/learned`` (default ``~/.cache``); never the repository.
    No shared fallback (such as the temp directory): another local user could plant a
    model there that never flags anything. When this folder cannot be used, the model is
    retrained at each start (~6 s).
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "soudan-intake" / "learned"


def private_folder(folder: Path) -> bool:
    """Whether ``folder`` is a real directory of this user that nobody else may write."""
    try:
        st = folder.lstat()
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return False
    return not hasattr(os, "getuid") or st.st_uid == os.getuid()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def cache_key(examples_raw: bytes) -> str:
    """SHA-256 of everything the trained model depends on.

    The examples' bytes, the model format, the training constants, the source of this
    module, of the trainer and of ``intake.lemmas`` (whose normalising the model reads
    through), and the versions of scikit-learn, NumPy and SciPy (read from package
    metadata: importing them is what this module avoids). Any change gives a new key, so
    a stale cache is never used, only left behind.
    """
    h = hashlib.sha256()
    h.update(examples_raw)
    h.update(
        repr(
            (
                MODEL_FORMAT,
                TARGET_RECALL,
                MIN_THRESHOLD,
                FOLDS,
                SEED,
                C,
                MIN_CHARS,
                SHORT_CHARS,
                SHORT_THRESHOLD,
            )
        ).encode()
    )
    here = Path(__file__).resolve().parent
    for name in ("learned.py", "learned_train.py", "lemmas.py"):
        h.update(name.encode() + (here / name).read_bytes())
    for dist in ("scikit-learn", "numpy", "scipy"):
        h.update(f"{dist}={_version(dist)};".encode())
    # the folding the model reads through depends on the Unicode tables of this Python
    h.update(f"python={sys.version_info[:3]};unicode={unicodedata.unidata_version}".encode())
    return h.hexdigest()


def cache_path(key: str) -> Path:
    """The cache file of the model for ``key`` (``UrgencyModel.to_bytes`` layout)."""
    return cache_dir() / f"{key}{CACHE_SUFFIX}"


def _read_cache(key: str) -> UrgencyModel | None:
    """The cached model for ``key``; None when absent, unreadable, corrupt, stale, or in a
    folder that is not this user's alone (a file there is not trusted)."""
    if not private_folder(cache_dir()):
        return None
    path = cache_path(key)
    try:
        if path.is_symlink():
            return None
        return UrgencyModel.from_bytes(path.read_bytes(), key)
    except (OSError, ValueError):
        return None


def _write_cache(key: str, model: UrgencyModel) -> None:
    """Store the model atomically (temp file + rename); a failure only costs a retrain."""
    raw = model.to_bytes(key)
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not private_folder(folder):
            return
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
            os.replace(tmp, cache_path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        return


def train_in_child(examples: list[dict[str, Any]], path: Path) -> UrgencyModel:
    """Run ``python -m intake.learned train`` on the examples; ``RulesError`` on failure.

    The child imports scikit-learn and exits; this process only reads the model's compact
    bytes (``UrgencyModel.to_bytes`` with an empty key), not JSON: decoding 85,000 n-grams
    from JSON left ~20 MB of freed fragments in the worker's heap (``from_bytes``).
    """
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "intake.learned", "train"],
            input=json.dumps(examples, ensure_ascii=True).encode("ascii"),
            capture_output=True,
            env=env,
            timeout=TRAIN_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RulesError([Problem(path, None, f"training could not run ({e})")]) from e
    if done.returncode == 3:
        reason = json.loads(done.stdout)["error"]
        raise RulesError([Problem(path, None, f"{reason}; add labelled examples")])
    try:
        if done.returncode != 0:
            raise ValueError(f"exit status {done.returncode}")
        return UrgencyModel.from_bytes(done.stdout, CHILD_KEY)
    except ValueError as e:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise RulesError(
            [
                Problem(
                    path,
                    None,
                    f"training failed ({e}; {' '.join(tail) or 'no message'}); check that "
                    "scikit-learn is installed: .venv/bin/pip install scikit-learn",
                )
            ]
        ) from e


def load_model(rules_dir: Path) -> UrgencyModel | None:
    """Train on ``rules_dir/examples.jsonl``; None when there is no such file.

    Remembered in this process and in the cache (``cache_dir``) by ``cache_key``; a
    training problem raises ``RulesError`` naming the examples file.
    """
    path = Path(rules_dir) / EXAMPLES_FILE
    if not path.is_file():
        return None
    raw = path.read_bytes()
    key = cache_key(raw)
    model = _MEMO.get(key)
    if model is not None:
        return model
    # A cache hit skips reading the examples: the key is the hash of these very bytes, and
    # a model is only cached after they passed ``load_examples`` (whose code the key also
    # covers). Parsing 4,300 examples into dicts would cost the worker ~3 MB for nothing.
    model = _read_cache(key)
    if model is None:
        model = train_in_child(load_examples(path), path)
        _write_cache(key, model)
    _MEMO[key] = model
    return model


def text_chars(subject: str, text: str) -> int:
    """A mail's length for the learned tier's bands: subject and body, no white space.

    Not ``triage._few_words_length`` (letters only, repeats once, a reply's subject
    left out): that asks how much the resident wrote, this how many characters the
    n-grams are drawn from, emoji included (they are n-grams of the model too).
    """
    return len("".join((subject + text).split()))


def learned_urgent(
    model: UrgencyModel,
    subject: str,
    text: str,
    *,
    threshold: float | None = None,
    normalised: str | None = None,
) -> list[str] | None:
    """The words that explain an urgent score, or None when the model has no case.

    None when the score is below the threshold (the model's own, or a stricter
    ``threshold`` the caller asks for), and also when no n-gram of the mail pushed the
    score up: then the score is the intercept alone (an empty mail, or one in a script
    the examples never used), which is the model knowing nothing, not evidence of a
    crisis. An urgent verdict therefore always names words of the mail. Below the
    threshold (most mail) the explanation is never computed.
    """
    bar = model.threshold if threshold is None else max(threshold, model.threshold)
    if model.probability(subject, text, normalised=normalised) < bar:
        return None
    p, words = model.score(subject, text, normalised=normalised)
    if p < bar or not words:
        return None
    return words


def rebuild_examples(data_dir: Path, out: Path) -> int:
    """Write the union of ``SOURCE_FILES`` in ``data_dir`` to ``out``; return the count."""
    lines: list[str] = []
    for name in SOURCE_FILES:
        for line in (Path(data_dir) / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                kept = {k: row[k] for k in KEPT_FIELDS if k in row}
                lines.append(json.dumps(kept, ensure_ascii=False))
    Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m intake.learned rebuild|cv|train``.

    ``rebuild`` regenerates the examples, ``cv`` prints the CV figures, ``train`` is the
    child process of ``load_model`` (examples on stdin, the model's bytes on stdout).
    """
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(prog="python -m intake.learned")
    sub = parser.add_subparsers(dest="command", required=True)
    rebuild = sub.add_parser("rebuild", help="regenerate rules/examples.jsonl from tests/data")
    rebuild.add_argument("--data", type=Path, default=root / "tests" / "data")
    rebuild.add_argument("--out", type=Path, default=root / "rules" / EXAMPLES_FILE)
    cv = sub.add_parser("cv", help="train on the examples and print the CV figures")
    cv.add_argument("--rules", type=Path, default=root / "rules")
    sub.add_parser("train", help="(internal) examples JSON on stdin -> model bytes on stdout")
    args = parser.parse_args(None if argv is None else list(argv))
    if args.command == "train":
        from intake.learned_train import main_train

        return main_train()
    if args.command == "rebuild":
        n = rebuild_examples(args.data, args.out)
        print(f"wrote {n} examples to {args.out}")
        return 0
    model = load_model(args.rules)
    if model is None:
        print(f"no {EXAMPLES_FILE} in {args.rules}", file=sys.stderr)
        return 1
    f = model.cv
    print(
        f"{f.examples} examples ({f.urgent} urgent), {f.folds}-fold CV at threshold "
        f"{model.threshold:.3f}: recall {f.recall:.3f} precision {f.precision:.3f}"
    )
    if f.short_recall is not None and f.short_flagged is not None:
        print(
            f"{f.short_examples} examples of {MIN_CHARS}-{SHORT_CHARS - 1} characters, at "
            f"{max(SHORT_THRESHOLD, model.threshold):.3f}: urgent caught {f.short_recall:.3f}, "
            f"non-urgent flagged {f.short_flagged:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
