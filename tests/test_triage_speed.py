"""The fast paths of classify give the answers of the plain computations they replace."""

from __future__ import annotations

from pathlib import Path

import pytest

from intake.rules import load_rules
from intake.triage import classify_text, triage_report

SHIPPED = Path(__file__).resolve().parent.parent / "rules"


def test_live_starts_keeps_one_word_and_live_longer_patterns_in_rule_order() -> None:
    rules = load_rules(SHIPPED)
    # a common word: it starts one-word and many longer patterns
    plan = max(
        (rules.token_patterns((key,)) for key in list(rules.first_word)[:400]),
        key=lambda plan: len(plan.starts),
    )
    assert plan.longer and plan.single_starts != plan.starts
    longer = [number for _, shape, number in plan.starts if shape is not None]
    for live in (frozenset(), frozenset(longer[:1]), frozenset(longer[::2]), frozenset(longer)):
        expected = tuple(e for e in plan.starts if e[1] is None or e[2] in live)
        assert rules.live_starts(plan, live) == expected
        assert rules.live_starts(plan, live) == expected  # and again, from the cache
    assert plan.single_starts == rules.live_starts(plan, frozenset())


def test_live_starts_does_not_answer_for_another_plan_under_a_reused_id() -> None:
    rules = load_rules(SHIPPED)
    keys = [k for k in rules.first_word if rules.token_patterns((k,)).longer][:2]
    first, second = (rules.token_patterns((k,)) for k in keys)
    live = frozenset(n for _, shape, n in first.starts + second.starts if shape is not None)
    # as if ``first`` had been freed and ``second`` had been given its id
    rules._live_starts[(id(second), live)] = (first, rules.live_starts(first, live))
    assert rules.live_starts(second, live) == tuple(
        e for e in second.starts if e[1] is None or e[2] in live
    )


def test_learned_scores_the_same_from_the_analysers_normalised_text() -> None:
    from intake.learned import learned_urgent, shown

    model = load_rules(SHIPPED).learned
    assert model is not None
    for subject, text in [
        ("相談", "もう消えたい。ｼﾆﾀｲって毎日思ってる〜〜〜"),
        ("Re: 相談", "バイト先の店長が怖くて、誰にも言えません"),
        ("", "ｱﾙﾊﾞｲﾄ😢 しにたいしにたい"),
    ]:
        normalised = shown(subject, text)
        assert model.probability(subject, text, normalised=normalised) == model.probability(
            subject, text
        )
        assert model.score(subject, text, normalised=normalised) == model.score(subject, text)
        for threshold in (None, 0.0):
            assert learned_urgent(
                model, subject, text, threshold=threshold, normalised=normalised
            ) == learned_urgent(model, subject, text, threshold=threshold)


def test_classify_does_not_normalise_a_mail_again_for_the_learned_tier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from intake import learned

    rules = load_rules(SHIPPED)
    assert rules.learned is not None
    text = "最近ずっと眠れなくて、朝になるのが怖いです。誰にも相談できません。" * 3
    expected = triage_report(classify_text("相談", text, rules))

    def normalised_again(subject: str, text: str) -> str:
        raise AssertionError("the analyser already normalised this mail")

    monkeypatch.setattr(learned, "shown", normalised_again)
    assert triage_report(classify_text("相談", text, rules)) == expected


def test_length_filter_with_the_index_facts_keeps_what_the_plain_filter_keeps() -> None:
    from intake.lemmas import get_analyser
    from intake.triage import _find, _for_length

    rules = load_rules(SHIPPED)
    assert rules.few_words_ids and rules.longest_max_chars > 0
    for subject, text in [
        ("", "死ぬ"),
        ("Re: 【笠岡市】受付", "たすけて！！！"),
        ("", "死にたいとかではない"),
        ("", "死ぬほど眠い"),
        ("相談", "死ぬほど眠いけど課題を終わらせないといけない。" * 4),
        ("相談", "バイトのシフトを減らされて家賃が払えません"),
    ]:
        hits = _find(get_analyser().analyse(subject + "\n" + text), rules)
        plain = _for_length(hits, subject, text)
        fast = _for_length(hits, subject, text, rules.few_words_ids, rules.longest_max_chars)
        assert fast == plain
        if len(text) > 3 * rules.longest_max_chars:
            assert all(h.pattern.max_chars is None for h in fast)


def test_combinations_by_first_concept_list_every_combination_once_in_rule_order() -> None:
    rules = load_rules(SHIPPED)
    listed = sorted(entry for entries in rules.combos_by_first.values() for entry in entries)
    assert [combo for _, combo in listed] == rules.combinations
    for first, entries in rules.combos_by_first.items():
        assert all(combo.concepts[0] == first for _, combo in entries)
        assert [index for index, _ in entries] == sorted(index for index, _ in entries)
