"""Regressions a differential review (rv12b) found in the twelfth session's triage changes.

Each mail here was urgent before that session and is urgent again: Kansai へん is not read
as a negation (questions, 〜わけやない, 〜へんかったら), and a 防止 campaign exclusion needs the
campaign's own word, so a disclosure that asks for help with DV or abuse is not discounted.
"""

from __future__ import annotations

import pytest

from intake.rules import RuleSet
from intake.triage import classify_text


def urgent(rules: RuleSet, text: str) -> bool:
    return bool(classify_text("相談", text, rules).urgent_reasons)


@pytest.mark.parametrize(
    "text",
    [
        "死にたいって思わへん?",
        "みんなは死にたいって思うことあらへんの?うちは毎日思う",
        "死にたいと思わへんわけやない",
        "死にたいと思わへんわけちゃう",
        "死にたいって思わへんようになりたい",
        "手首切らへんかったら落ち着かへん",
        # a hedge through しか: "all I can say is I don't want to die" (urgent before, too)
        "正直、死にたくないとしか言えない",
        "死にたくないとしか言えません",
    ],
)
def test_kansai_hen_does_not_deny_a_wish_to_die_or_to_cut(rules: RuleSet, text: str) -> None:
    assert urgent(rules, text)


@pytest.mark.parametrize("text", ["今夜寝るとこあらへん", "今晩泊まるところあらへん"])
def test_kansai_nowhere_to_sleep_tonight_is_acute_need(rules: RuleSet, text: str) -> None:
    reasons = classify_text("相談", text, rules).urgent_reasons
    assert [m.rule for m in reasons] == ["reading.acute_need.kansai_no_bed"]


def test_kansai_nothing_of_the_sort_is_not_acute_need(rules: RuleSet) -> None:
    assert not urgent(rules, "そんなことあらへん、大丈夫やで")


@pytest.mark.parametrize(
    "text",
    [
        "夫のDV、防止できますか",
        "夫からDV、防止策を教えて",
        "父から虐待、防止してほしい",
        "DV被害、再発防止のため今夜シェルターに入りたい",
    ],
)
def test_a_disclosure_asking_how_to_stop_abuse_is_urgent(rules: RuleSet, text: str) -> None:
    assert urgent(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "DV防止のポスターを作りました",
        "虐待防止月間のお知らせです",
        "児童虐待防止推進月間のチラシを配りたい",
        "DV防止法について知りたい",
        "DV防止の講演会に参加したい",
    ],
)
def test_a_prevention_campaign_is_not_a_disclosure(rules: RuleSet, text: str) -> None:
    assert not urgent(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "死にたいって思わない?",
        "死にたいって思わない？私は毎日思う",
        "消えたいって思うことない？",
        "死にたいと思わないの?",
    ],
)
def test_a_question_about_wanting_to_die_is_not_a_denial(rules: RuleSet, text: str) -> None:
    assert urgent(rules, text)


@pytest.mark.parametrize(
    "text", ["死にたいなんて思ってないよ?", "死にたいとは思わない。", "死にたいとは思わない"]
)
def test_a_denial_with_or_without_a_reassuring_question_mark_stays_one(
    rules: RuleSet, text: str
) -> None:
    assert not urgent(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        # a wish after an everyday cause is still a wish; only 〜死んじゃいそう is hyperbole
        "仕事が忙しすぎてこのまま死にたい",
        "眠すぎて今夜死にたい",
        "つらすぎてこのまま死んじゃいそう",
        # a poster seen is no poster quoted: the wish is the writer's own
        "ポスターを見て、命を絶ちたいと思った",
        "啓発ポスターを見たけど、命を絶つことばかり考えてしまう",
    ],
)
def test_the_new_hyperbole_and_poster_exclusions_leave_a_real_wish_urgent(
    rules: RuleSet, text: str
) -> None:
    assert urgent(rules, text)
