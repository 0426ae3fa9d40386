"""The reading tier's cheap pre-check must never hide a match the full reading has.

Why: the pre-check joined token readings without the 。 the full reading puts between
sentences, so a reading pattern that ends at a sentence's end (``(?=。|$)``) matched only
at the very end of a mail: たすけてぇ。お願い was never read (review rv11a).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from intake.lemmas import get_analyser
from intake.rules import load_rules
from intake.triage import _kana_by_sentence, _reading_may_match, classify_text

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rules():
    loaded = load_rules(ROOT / "rules")
    loaded.learned = None  # the rule tiers alone: the learned tier must not hide a miss
    return loaded


@pytest.mark.parametrize(
    "text",
    [
        "たすけてぇ。お願い",
        "たすけてえ。だれか",
    ],
)
def test_a_drawn_out_cry_for_help_is_urgent_when_a_sentence_follows(rules, text: str) -> None:
    triage = classify_text("", text, rules)
    assert triage.urgent
    assert any(m.rule == "reading.help.cry" for m in triage.urgent_reasons)


def test_the_precheck_reading_has_the_full_readings_sentence_marks() -> None:
    analysis = get_analyser().analyse("たすけてぇ。お願い\n次の行です")
    full, _ = analysis.reading()
    assert _kana_by_sentence(analysis) == full  # no digit here, so the two are the same


def test_the_precheck_never_says_no_where_a_reading_pattern_matches_the_full_reading(
    rules,
) -> None:
    texts = [
        "たすけてぇ。お願い",
        "消えてもいいかな。ねえ聞いて",
        "今日はいい天気。散歩した。",
        "テスト終わった。つかれたー。ねる",
    ]
    analyser = get_analyser()
    for text in texts:
        analysis = analyser.analyse(text)
        full, _ = analysis.reading()
        matches = any(r.regex.search(full) for r in rules.reading if not r.subject_only)
        if matches:
            assert _reading_may_match(analysis, rules, "")


def test_an_ordinary_mail_of_several_sentences_is_not_flagged(rules) -> None:
    assert not classify_text("", "今日はいい天気。散歩した。たのしかった", rules).urgent
