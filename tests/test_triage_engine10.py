"""Engine gaps of triage that could lose an urgent flag (tenth session; all mails synthetic).

Each test names the behaviour the rules tiers must show on their own: the learned tier is
switched off here, so a rule-tier gap is not hidden by the safety net (which may not know
an unseen phrasing).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from intake.rules import RuleSet, load_rules
from intake.triage import Triage, classify_text

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    """The shipped rules without the learned tier (see the module docstring)."""
    loaded = load_rules(RULES_DIR)
    loaded.learned = None
    return loaded


def triage(rules: RuleSet, text: str, subject: str = "相談") -> Triage:
    return classify_text(subject, text, rules)


def counted(t: Triage) -> list[str]:
    """The rules of the urgent reasons that counted."""
    return [m.rule for m in t.urgent_reasons]


# -- negation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "死にたいなんて言えない",
        "消えたいって言えない",
        "死にたいってことも言えない",
        "死にたいとか思ってても言えない",
        "死にたいと思ってる事は言ってない",
    ],
)
def test_a_wish_that_cannot_be_told_is_not_a_denial(rules: RuleSet, text: str) -> None:
    t = triage(rules, text)
    assert t.urgent
    assert "urgent.suicidal.wish" in counted(t)


@pytest.mark.parametrize(
    "text",
    ["死にたいなんて言ってない", "死にたいとは思っていません", "死にたいと思ったりはしていない"],
)
def test_saying_the_wish_is_not_there_is_still_a_denial(rules: RuleSet, text: str) -> None:
    t = triage(rules, text)
    assert not t.urgent
    assert any(m.discounted == "negated" for m in t.matches if m.kind == "urgent")


@pytest.mark.parametrize(
    "text",
    [
        "中3の冬は毎晩4にたいって泣いてた。",  # ないてた: 泣く, not ない
        "問診票の『4にたいと感じることがある』にチェックした。",  # とかんじる: 感じる, not ん
        "仏壇の前で思う。正直もう4にたいんよ",  # explanatory ん of dialect
        "ちゃうな、4にたいんやわ",
    ],
)
def test_reading_tier_takes_only_a_real_negation_word_as_denial(rules: RuleSet, text: str) -> None:
    t = triage(rules, text)
    assert t.urgent
    assert "reading.suicidal.wish" in counted(t)


@pytest.mark.parametrize(
    "frame",
    [
        "毎晩{}って泣いてた。",
        "{}とかじゃないです。",
        "{}わけではなくて、楽しみがほしいだけ。",
        "{}とは思わん。",
        "{}と思わない日はない。",
        "{}なんて言えない。",
        "{}と感じることがある。",
    ],
)
def test_reading_and_lemma_tiers_judge_negation_alike(rules: RuleSet, frame: str) -> None:
    kanji = triage(rules, frame.format("死にたい"))
    blurred = triage(rules, frame.format("4にたい"))
    assert kanji.urgent == blurred.urgent
