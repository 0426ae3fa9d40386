"""Urgent wording from review rv12a: what the shipped rules and the triage must flag now.

Each group has everyday or denying sentences that must stay quiet. Every mail is
synthetic and written for these tests (not the reviewer's probe sentences).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from intake.rules import RuleSet, load_rules
from intake.triage import classify_text

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules(RULES_DIR)


def reasons(rules: RuleSet, text: str, subject: str = "") -> set[str]:
    """The rule ids that made the mail urgent (empty when it is not urgent)."""
    return {m.rule for m in classify_text(subject, text, rules).urgent_reasons}


# -- group 1: しか…ない is "only", not a denial ------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "最近は死ぬことしか考えられない",
        "もう自殺しか道はないと思う",
        "リスカでしか自分を落ち着けられない",
        "消えたいしか頭に浮かばない",
        # "all I have ever thought is that I want to die": しか…ない affirms the thought
        "死にたいなんて思ったことしかない人生です",
    ],
)
def test_only_thinking_of_death_or_only_coping_by_harm_is_urgent(rules: RuleSet, text: str) -> None:
    assert reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "死にたいとは全然思わない",
        "正直、死にたくないとしか言えない",
        "今は死にたくないとしか思えないです",
        "死にたいなんて思ったことは一度もない",
    ],
)
def test_a_denial_stays_a_denial_with_or_without_shika(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text)
