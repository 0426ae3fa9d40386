"""Behaviour of the learned urgent tier (intake.learned). All mails here are synthetic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from intake import learned
from intake.errors import RulesError
from intake.learned import (
    CACHE_ENV,
    EXAMPLES_FILE,
    KEPT_FIELDS,
    SOURCE_FILES,
    UNSEEN_FILES,
    UrgencyModel,
    cache_dir,
    cache_key,
    learned_urgent,
    load_examples,
    load_model,
    prepare,
    rebuild_examples,
    shown,
    train,
)
from intake.learned_train import docs_of, fit, labels_of, recall_threshold, vectorizer
from intake.lemmas import to_hiragana

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"

CRISIS = ("もう限界", "もう死にたいです。今夜、駅のホームから飛び降りるつもりです。")
BENIGN = (
    "ボランティアについて",
    "土曜日の海岸清掃ボランティアに参加したいです。申し込み方法を教えてください。",
)
PROBES = [CRISIS, BENIGN, ("", "家賃が払えなくて困っています"), ("相談", "ｼﾆﾀｲ")]


@pytest.fixture(scope="module")
def examples() -> list[dict[str, Any]]:
    return load_examples(RULES_DIR / EXAMPLES_FILE)


@pytest.fixture(scope="module")
def model() -> UrgencyModel:
    loaded = load_model(RULES_DIR)
    assert loaded is not None
    return loaded


def tiny_examples() -> list[dict[str, Any]]:
    """Six urgent and six calm synthetic mails: enough for 5-fold CV, small and fast."""
    urgent = [
        "死にたい気持ちが消えません",
        "もう消えたい、生きていたくない",
        "手首を切ってしまいました",
        "薬を全部飲もうと思っています",
        "屋上から飛び降りたい",
        "今夜で終わりにします、さようなら",
    ]
    calm = [
        "ボランティアに参加したいです",
        "家賃の相談窓口を教えてください",
        "祖母の介護サービスについて知りたい",
        "部活の先輩との関係で悩んでいます",
        "友達がいなくて少し寂しいです",
        "相談の受付時間は何時までですか",
    ]
    return [
        {"id": f"u{i}", "subject": "相談", "text": t, "urgent": True} for i, t in enumerate(urgent)
    ] + [{"id": f"c{i}", "subject": "相談", "text": t, "urgent": False} for i, t in enumerate(calm)]


def test_training_twice_on_the_same_examples_gives_the_same_model(
    examples: list[dict[str, Any]], model: UrgencyModel
) -> None:
    again = train(examples)
    assert again.threshold == model.threshold
    assert again.cv == model.cv
    for subject, text in PROBES:
        assert again.score(subject, text) == model.score(subject, text)


def test_threshold_is_chosen_for_high_recall_but_never_below_the_floor(
    model: UrgencyModel,
) -> None:
    from intake.learned import MIN_THRESHOLD

    # The CV threshold targets 0.97 recall; the floor keeps ordinary mail from alerting
    # (the examples are half crises). The CV figures are reported at the threshold used.
    assert MIN_THRESHOLD <= model.threshold < 1.0
    assert model.cv.recall >= 0.6  # the model alone, out of fold; the rules catch the rest
    assert 0.0 < model.cv.precision <= 1.0


def test_short_mail_figures_are_measured_at_the_short_threshold(model: UrgencyModel) -> None:
    # SHORT_THRESHOLD was chosen on these figures: few false alarms among short non-urgent
    # examples, whatever recall that leaves (the rules speak first on short mail).
    assert model.cv.short_examples > 50
    assert model.cv.short_recall is not None and model.cv.short_flagged is not None
    assert model.cv.short_flagged <= 0.03
    assert model.cv.short_recall > 0.1


def test_obvious_crisis_scores_above_the_threshold(model: UrgencyModel) -> None:
    p, _ = model.score(*CRISIS)
    assert p >= model.threshold
    assert learned_urgent(model, *CRISIS)


def test_obvious_benign_mail_scores_below_the_threshold(model: UrgencyModel) -> None:
    p, _ = model.score(*BENIGN)
    assert p < model.threshold
    assert learned_urgent(model, *BENIGN) is None


def test_a_caller_may_ask_for_a_stricter_threshold_but_not_a_looser_one(
    model: UrgencyModel,
) -> None:
    p = model.probability(*CRISIS)
    assert p >= model.threshold
    assert learned_urgent(model, *CRISIS, threshold=min(1.0, p + 0.01)) is None
    assert learned_urgent(model, *CRISIS, threshold=0.0) == learned_urgent(model, *CRISIS)
    p_benign = model.probability(*BENIGN)
    assert learned_urgent(model, *BENIGN, threshold=p_benign / 2) is None  # still model's bar


def test_explanation_quotes_words_present_in_the_mail(model: UrgencyModel) -> None:
    words = learned_urgent(model, *CRISIS)
    assert words
    text = shown(*CRISIS)
    for word in words:
        assert len(word) >= 2
        assert word in text


def test_katakana_and_half_width_spellings_score_like_hiragana(model: UrgencyModel) -> None:
    hira = model.score("", "しにたい")[0]
    assert model.score("", "シニタイ")[0] == pytest.approx(hira)
    assert model.score("", "ｼﾆﾀｲ")[0] == pytest.approx(hira)
    assert learned_urgent(model, "", "ｼﾆﾀｲ") == ["シニタイ"]  # quoted after NFKC


def test_mail_with_no_known_ngram_is_not_urgent_by_intercept_alone(model: UrgencyModel) -> None:
    assert learned_urgent(model, "", "") is None
    assert model.score("", "")[1] == []


# Mail the n-gram keys must survive: emoji the examples use and do not use, private-use
# characters (which share codes with the folded emoji), NUL, spaces of every kind.
ODD_TEXTS = [
    ("つらい😢", "もう無理です😢😢 消えたい😂"),
    ("", "\ue000\ue001\ue002 死にたい \U0001f9ff\U00020000"),
    ("相談", "親が\x00怖くて　家に帰りたくない\t\n\n  です"),
    ("a", "b"),
]


def test_fast_scoring_matches_scikit_learn(
    examples: list[dict[str, Any]], model: UrgencyModel
) -> None:
    # The worker's model is plain data; scikit-learn fitted on the same examples is the
    # reference for every example, the probes and the odd characters.
    vec, clf = fit(docs_of(examples), labels_of(examples))
    pairs = [(e.get("subject", ""), e["text"]) for e in examples] + PROBES + ODD_TEXTS
    expected = clf.predict_proba(vec.transform([prepare(s, t) for s, t in pairs]))[:, 1]
    got = [model.probability(s, t) for s, t in pairs]
    # scikit-learn transforms in float32 (the vectoriser's dtype); the model scores in
    # float64, as the earlier hand-written scorer did: equal to ~1e-8.
    assert got == pytest.approx(expected.tolist(), abs=1e-6)
    assert [model.score(s, t)[0] for s, t in pairs] == pytest.approx(got, abs=1e-12)


def test_explanation_ties_follow_the_vectoriser_order() -> None:
    # Equal contributions are ranked by where char_wb first emits the n-gram, as the
    # stable argsort over the vectoriser's indices did.
    doc = prepare("件名", "あいう  えお かき\nあいう くけ えおか")
    grams = vectorizer().build_analyzer()(doc)
    first = list(dict.fromkeys(grams))
    joined = " " + " ".join(doc.split()) + " "
    assert sorted(first, key=lambda g: learned._analyzer_rank(joined, g)) == first


def test_katakana_folding_equals_to_hiragana_on_the_whole_block() -> None:
    block = "".join(chr(c) for c in range(0x30A0, 0x3100))
    mixed = "ｼﾆﾀｲ ホームから ABC Ωmega " + block
    assert prepare("件名", mixed) == to_hiragana(shown("件名", mixed)).lower()


def test_worker_process_never_imports_scikit_learn(tmp_path: Path) -> None:
    # A fresh interpreter with an empty cache: training must happen in a child process,
    # and loading the rules and classifying an urgent mail must leave no scikit-learn or
    # SciPy in the worker's modules.
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from intake.rules import load_rules
        from intake.triage import classify_text
        rules = load_rules(Path(sys.argv[1]))
        text = "毎日つらくて、もう全部終わりにしたいと思っています。誰にも言えません。"
        classify_text("相談", text, rules)
        p = rules.learned.probability("相談", text)  # the scoring path, whatever triage chose
        print(json.dumps({"modules": [m for m in ("sklearn", "scipy") if m in sys.modules],
                          "scored": 0.0 < p < 1.0}))
        """
    )
    env = dict(os.environ, **{CACHE_ENV: str(tmp_path / "cache")})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-c", script, str(RULES_DIR)],
        capture_output=True,
        env=env,
        timeout=300,
        check=True,
    )
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result == {"modules": [], "scored": True}
    assert list((tmp_path / "cache").glob("*.model"))  # and the trained model was cached


@pytest.fixture
def tiny_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A rules dir with the tiny examples, and a private, empty model cache."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(learned, "_MEMO", {})
    rules = tmp_path / "rules"
    rules.mkdir()
    lines = [json.dumps(e, ensure_ascii=False) for e in tiny_examples()]
    (rules / EXAMPLES_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rules


def _no_training(*args: object) -> UrgencyModel:
    raise AssertionError("trained again")


def test_a_second_load_uses_the_memo_and_a_restart_uses_the_cache(
    tiny_rules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_model(tiny_rules)
    assert first is not None
    monkeypatch.setattr(learned, "train_in_child", _no_training)
    assert load_model(tiny_rules) is first  # same process: the memo
    monkeypatch.setattr(learned, "_MEMO", {})  # a restarted worker: the cache file
    again = load_model(tiny_rules)
    assert again is not None and again is not first
    assert again.to_data() == first.to_data()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: raw[: len(raw) // 2], id="torn write"),
        pytest.param(lambda raw: raw[:-1], id="last byte missing"),
        pytest.param(lambda raw: raw + b"\0", id="trailing byte"),
        pytest.param(lambda raw: raw[:-3] + bytes([raw[-3] ^ 1]) + raw[-2:], id="flipped bit"),
        pytest.param(lambda raw: raw.split(b"\n", 1)[0], id="magic only"),
        pytest.param(lambda raw: b"", id="empty"),
        pytest.param(lambda raw: b'{"key": "', id="old JSON"),
    ],
)
def test_corrupt_cache_is_ignored_and_rebuilt(
    tiny_rules: Path, monkeypatch: pytest.MonkeyPatch, damage: Any
) -> None:
    first = load_model(tiny_rules)
    assert first is not None
    (cached,) = cache_dir().glob("*.model")
    key = cached.name.removesuffix(".model")
    good = cached.read_bytes()
    cached.write_bytes(damage(good))
    assert learned._read_cache(key) is None
    monkeypatch.setattr(learned, "_MEMO", {})
    again = load_model(tiny_rules)  # retrained
    assert again is not None and again.to_data() == first.to_data()
    assert cached.read_bytes() == good  # and the cache rewritten whole


def test_a_model_in_a_folder_others_may_write_is_not_trusted(
    tiny_rules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_model(tiny_rules)
    assert first is not None
    (cached,) = cache_dir().glob("*.model")
    key = cached.name.removesuffix(".model")
    planted = UrgencyModel.from_bytes(cached.read_bytes(), key)
    planted.threshold = 1.0  # a model that would never flag anything
    cached.write_bytes(planted.to_bytes(key))
    assert learned._read_cache(key) is not None  # a well-formed file ...
    cache_dir().chmod(0o777)  # ... in a folder others may write
    monkeypatch.setattr(learned, "_MEMO", {})
    again = load_model(tiny_rules)  # retrained, the planted file ignored
    assert again is not None and again.threshold == first.threshold < 1.0


def test_a_symlinked_cache_file_is_not_followed(
    tiny_rules: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_model(tiny_rules) is not None
    (cached,) = cache_dir().glob("*.model")
    key = cached.name.removesuffix(".model")
    elsewhere = tmp_path / "elsewhere.model"
    cached.rename(elsewhere)
    cached.symlink_to(elsewhere)
    assert learned._read_cache(key) is None


def test_a_cache_file_for_another_key_is_not_used(
    tiny_rules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_model(tiny_rules)
    assert first is not None
    (cached,) = cache_dir().glob("*.model")
    key = cached.name.removesuffix(".model")
    other = "0" * 64
    cached.rename(learned.cache_path(other))  # the right layout under another key's name
    assert learned._read_cache(other) is None
    assert learned._read_cache(key) is None  # absent
    with pytest.raises(ValueError, match="another key"):
        UrgencyModel.from_bytes(first.to_bytes(key), other)


def test_the_cache_key_covers_the_file_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The layout is written and read by this module, whose source the key hashes: a new
    # layout (another BYTES_MAGIC, or any edit) gives new file names, so a file of an
    # older layout is never even opened. The suffix also differs from the JSON era's.
    here = Path(learned.__file__).resolve().parent
    copy = tmp_path / "intake"
    copy.mkdir()
    for name in ("learned.py", "learned_train.py", "lemmas.py"):
        (copy / name).write_bytes((here / name).read_bytes())
    raw = b"examples"
    before = cache_key(raw)
    monkeypatch.setattr(learned, "__file__", str(copy / "learned.py"))
    assert cache_key(raw) == before
    source = (copy / "learned.py").read_text(encoding="utf-8")
    changed = source.replace("learned model 1", "learned model 2")
    assert changed != source
    (copy / "learned.py").write_text(changed, encoding="utf-8")
    assert cache_key(raw) != before
    assert learned.CACHE_SUFFIX != ".json"


def test_compact_bytes_round_trip_keeps_every_number_and_score(model: UrgencyModel) -> None:
    raw = model.to_bytes("k")
    assert raw.startswith(learned.BYTES_MAGIC)
    again = UrgencyModel.from_bytes(raw, "k")
    assert again.to_data() == model.to_data()
    assert (again.intercept, again.threshold, again.cv) == (
        model.intercept,
        model.threshold,
        model.cv,
    )
    assert np.array_equal(again._keys, model._keys)
    for subject, text in PROBES + ODD_TEXTS:
        assert again.score(subject, text) == model.score(subject, text)
    assert again.to_bytes("k") == raw


def test_vectorised_keys_equal_the_per_gram_keys(model: UrgencyModel) -> None:
    grams = [model._gram(i) for i in range(len(model._keys))]
    expected = [learned._key(model._fold_special(g)) for g in grams]
    assert model._keys.tolist() == expected


def test_odd_characters_in_n_grams_survive_the_compact_bytes() -> None:
    # Emoji (outside the BMP), a lone surrogate and private-use characters: one str
    # character each, so end offsets in characters must still fit after UTF-8.
    grams = {
        "😢😢": [1.5, 2.0],
        "\ud800x": [1.25, -0.5],
        "\ue000あ": [2.0, 0.25],
        "しにたい": [3.0, 4.0],
        " し": [1.0, 0.125],
        "たい ": [1.0, 0.75],
    }
    cv = learned.CVFigures(recall=0.5, precision=0.5, examples=2, urgent=1, folds=1)
    m = UrgencyModel(grams, -1.0, 0.7, cv)
    again = UrgencyModel.from_bytes(m.to_bytes("k"), "k")
    assert again.to_data()["grams"] == m.to_data()["grams"]
    assert sorted(m.to_data()["grams"].items()) == sorted(grams.items())
    for text in ("もう無理😢😢", "\ud800x \ue000あ", "しにたい"):
        assert again.score("", text) == m.score("", text)
    assert m.probability("", "しにたい") > m.probability("", "")


def _resealed(raw: bytes, body: bytes, **changes: Any) -> bytes:
    """``raw`` with another body (and header fields), its size and checksum made to fit."""
    import hashlib

    first, _ = raw[len(learned.BYTES_MAGIC) :].split(b"\n", 1)
    header = json.loads(first) | changes
    header |= {"body": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    return learned.BYTES_MAGIC + json.dumps(header).encode() + b"\n" + body


def test_a_well_sealed_file_with_inconsistent_arrays_is_still_refused() -> None:
    # The checksum guards against damage; the arrays are checked anyway, so a file that
    # was written wrong cannot become a model that reads past its n-grams.
    cv = learned.CVFigures(recall=0.5, precision=0.5, examples=2, urgent=1, folds=1)
    m = UrgencyModel({"しに": [1.0, 2.0], "たい": [1.0, 1.0]}, 0.0, 0.7, cv)
    raw = m.to_bytes("k")
    numbers = np.array([1.0, 1.0, 2.0, 1.0], dtype="<f8").tobytes()  # idf, then weights
    text = "しにたい".encode()

    def body(ends: list[int], tail: bytes = text, floats: bytes = numbers) -> bytes:
        return floats + np.array(ends, dtype="<i8").tobytes() + tail

    assert UrgencyModel.from_bytes(_resealed(raw, body([2, 4])), "k").to_data() == m.to_data()
    refused = {
        "a gram of one character": _resealed(raw, body([1, 4])),
        "ends past the text": _resealed(raw, body([2, 5])),
        "text past the last end": _resealed(raw, body([2, 4], text + b"x")),
        "text not UTF-8": _resealed(raw, body([2, 4], b"\xff" * 4)),
        "two grams with one key": _resealed(raw, body([2, 4], "しにしに".encode())),
        "a number not finite": _resealed(raw, body([2, 4], floats=numbers[:-8] + b"\xff" * 8)),
        "fewer bytes than the grams need": _resealed(raw, numbers, grams=2),
        "another format": _resealed(raw, body([2, 4]), format=learned.MODEL_FORMAT + 1),
        "a header that is not JSON": learned.BYTES_MAGIC + b"{key\n" + body([2, 4]),
        "no header line": learned.BYTES_MAGIC + b"{}",
    }
    for why, bad in refused.items():
        with pytest.raises(ValueError):
            UrgencyModel.from_bytes(bad, "k")
            pytest.fail(why)


def test_changed_examples_are_not_served_from_the_cache(
    tiny_rules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tiny_rules / EXAMPLES_FILE
    before = path.read_bytes()
    assert load_model(tiny_rules) is not None
    path.write_bytes(before.replace("手首を切って".encode(), "腕を切って".encode()))
    assert cache_key(path.read_bytes()) != cache_key(before)
    monkeypatch.setattr(learned, "train_in_child", _no_training)
    with pytest.raises(AssertionError, match="trained again"):
        load_model(tiny_rules)


def test_cache_lives_outside_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert ROOT not in cache_dir().resolve().parents


def test_training_that_crashes_is_a_rules_error_naming_the_examples(
    tiny_rules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(learned.sys, "executable", "/bin/false")
    with pytest.raises(RulesError, match=f"{EXAMPLES_FILE}: training failed"):
        load_model(tiny_rules)


def test_small_example_set_trains_and_separates_its_own_classes() -> None:
    m = train(tiny_examples())
    assert m.cv.examples == 12 and m.cv.urgent == 6
    assert m.score("", "死にたい気持ち")[0] > m.score("", "ボランティアに参加")[0]


def test_too_few_urgent_examples_cannot_choose_a_threshold() -> None:
    few = [e for e in tiny_examples() if not e["urgent"]] + tiny_examples()[:2]
    with pytest.raises(ValueError, match="urgent"):
        train(few)


def test_rules_dir_without_examples_gives_no_model(tmp_path: Path) -> None:
    assert load_model(tmp_path) is None


def test_examples_file_too_small_to_train_is_a_rules_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    rows = [{"id": "a", "subject": "", "text": "死にたい", "urgent": True}]
    (tmp_path / EXAMPLES_FILE).write_text(json.dumps(rows[0], ensure_ascii=False) + "\n")
    with pytest.raises(RulesError, match=EXAMPLES_FILE):
        load_model(tmp_path)


def test_bad_example_lines_are_all_reported_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / EXAMPLES_FILE
    lines = [
        json.dumps({"id": "a", "subject": "", "text": "x", "urgent": True}),
        "{not json",
        json.dumps({"id": "b", "text": "x", "urgent": "yes"}),
        json.dumps({"id": "a", "text": "y", "urgent": False}),
        json.dumps({"id": "c", "urgent": False}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(RulesError) as err:
        load_examples(path)
    lines_named = sorted(p.line for p in err.value.problems if p.line is not None)
    assert lines_named == [2, 3, 4, 5]
    assert "duplicate id 'a' (first on line 1)" in str(err.value)


def test_rebuild_writes_the_union_of_the_sources_with_kept_fields_only(tmp_path: Path) -> None:
    for n, name in enumerate(SOURCE_FILES):
        row = {
            "id": f"x{n}",
            "subject": "件名",
            "text": f"本文{n}",
            "topic": "other",
            "secondary": [],
            "urgent": n % 2 == 0,
            "note": "labeller's reason",
        }
        (tmp_path / name).write_text(json.dumps(row, ensure_ascii=False) + "\n\n")
    out = tmp_path / "out.jsonl"
    assert rebuild_examples(tmp_path, out) == len(SOURCE_FILES)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [f"x{n}" for n in range(len(SOURCE_FILES))]
    assert all(set(r) == set(KEPT_FIELDS) for r in rows)


def test_shipped_examples_never_include_the_unseen_holdouts(
    examples: list[dict[str, Any]],
) -> None:
    assert not set(UNSEEN_FILES) & set(SOURCE_FILES)
    assert not [e["id"] for e in examples if str(e["id"]).startswith(("h4-", "h5-", "h6-", "h7-"))]


def test_every_labelled_corpus_is_either_training_data_or_an_unseen_holdout() -> None:
    """A new corpus must be placed on purpose: trained on, or kept unseen."""
    data = Path(__file__).resolve().parent / "data"
    corpora = {p.name for p in data.glob("*.jsonl")}
    assert corpora == set(SOURCE_FILES) | set(UNSEEN_FILES)


def test_shipped_examples_are_the_rebuild_of_the_source_files(tmp_path: Path) -> None:
    """A corpus added to SOURCE_FILES without ``rebuild`` would never reach the model."""
    data = Path(__file__).resolve().parent / "data"
    if not all((data / name).exists() for name in SOURCE_FILES):
        pytest.skip("the labelled corpora are not all present")
    out = tmp_path / EXAMPLES_FILE
    rebuild_examples(data, out)
    assert out.read_text(encoding="utf-8") == (RULES_DIR / EXAMPLES_FILE).read_text(
        encoding="utf-8"
    )


def test_recall_threshold_is_the_score_of_the_last_positive_needed() -> None:
    scores = np.array([0.9, 0.1, 0.8, 0.7, 0.95])
    labels = np.array([1, 0, 1, 1, 0])
    assert recall_threshold(scores, labels, 0.66) == 0.8  # 2 of 3 positives
    assert recall_threshold(scores, labels, 1.0) == 0.7


def test_the_test_run_has_the_model_cached_where_its_service_subprocesses_look() -> None:
    """Worker tests start ``service.py`` in subprocesses and give it seconds to answer;
    without a cached model each start trained one first (~15 s, over 30 s under CPU load,
    which failed them). ``tests/conftest.py`` names one cache for the whole run in the
    environment the subprocesses inherit and trains into it once, before the first test."""
    folder = os.environ.get(CACHE_ENV)
    assert folder, f"{CACHE_ENV} is not set for the test run's subprocesses"
    key = learned.cache_key((RULES_DIR / EXAMPLES_FILE).read_bytes())
    assert (Path(folder) / f"{key}{learned.CACHE_SUFFIX}").is_file()
