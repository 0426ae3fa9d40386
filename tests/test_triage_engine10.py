"""Engine gaps of triage that could lose an urgent flag (tenth session; all mails synthetic).

Each test names the behaviour the rules tiers must show on their own: the learned tier is
switched off here, so a rule-tier gap is not hidden by the safety net (which may not know
an unseen phrasing).
"""

from __future__ import annotations

import pytest

from intake.lemmas import get_analyser
from intake.rules import RuleSet
from intake.triage import Triage, classify_text


@pytest.fixture(scope="module")
def rules(rules_without_learned: RuleSet) -> RuleSet:
    """The shipped rules without the learned tier (see the module docstring)."""
    return rules_without_learned


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
        # しにだい: a typo only the reading tier reads (the lemma tier reads 4にたい now)
        "中3の冬は毎晩しにだいって泣いてた。",  # ないてた: 泣く, not ない
        "問診票の『しにだいと感じることがある』にチェックした。",  # とかんじる: 感じる, not ん
        "仏壇の前で思う。正直もうしにだいんよ",  # explanatory ん of dialect
        "ちゃうな、しにだいんやわ",
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
    blurred = triage(rules, frame.format("しにだい"))
    assert kanji.urgent == blurred.urgent


# -- short readings ---------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "particle"), [("刃", "は"), ("手", "て"), ("二", "に")])
def test_a_kanji_word_with_a_short_reading_does_not_match_a_particle(
    pattern: str, particle: str
) -> None:
    analyser = get_analyser()
    word = analyser.pattern_keys(pattern)[0][0]
    text = analyser.analyse(f"今日{particle}手首が痛い")
    particles = [info for info in text.infos if info.surface == particle]
    assert particles
    assert all(word.isdisjoint(info.keys) for info in particles)


@pytest.mark.parametrize(("pattern", "kana"), [("首", "くび"), ("死ぬ", "しぬ"), ("目", "め")])
def test_a_kanji_pattern_word_still_matches_its_kana_spelling(pattern: str, kana: str) -> None:
    analyser = get_analyser()
    word = analyser.pattern_keys(pattern)[0][0]
    assert any(not word.isdisjoint(info.keys) for info in analyser.analyse(kana).infos)


@pytest.mark.parametrize("text", ["カミソリの刃を腕に当てた", "刃で手首を切った"])
def test_a_blade_against_the_body_is_urgent(rules: RuleSet, text: str) -> None:
    t = triage(rules, text)
    assert "urgent.self_harm.instrument" in counted(t)


@pytest.mark.parametrize("text", ["私は手首を怪我した", "今日は手首が痛いので体育を休んだ"])
def test_the_particle_ha_before_a_body_part_is_no_blade(rules: RuleSet, text: str) -> None:
    assert not triage(rules, text).urgent


# -- youth slang and words the analyser splits --------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "昨日odした",  # the analyser keeps the case of Latin letters
        "Odしちゃった",
        "オーバードースしそう",
        "飛び降りしようかな",  # a noun 飛び降り here, not the verb 飛び降りる
        "電車に飛び込みしたい",
        "今日はじさつしたい",  # read 今日|はじ|さつ|し|たい
        "今夜からネカフェで寝るしかない",
        "お金が尽きて今夜は漫喫に泊まる",
    ],
)
def test_slang_and_split_crisis_words_are_urgent(rules: RuleSet, text: str) -> None:
    assert triage(rules, text).urgent


@pytest.mark.parametrize(
    "text",
    [
        "飛び込み営業をしたいです",
        "プールで飛び込みの練習をした",
        "私に対して怒ってる",
        "試しに体験したい",
        "ネカフェで漫画を読むのが好き",
    ],
)
def test_look_alikes_of_the_slang_are_not_urgent(rules: RuleSet, text: str) -> None:
    assert not triage(rules, text).urgent


# -- far negation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "死にたいと思ったことがない",
        "死にたいなんて一度も思ったことはない",
        "死にたいと一回も思ったことない",
    ],
)
def test_never_having_had_the_wish_is_a_denial(rules: RuleSet, text: str) -> None:
    t = triage(rules, text)
    assert not t.urgent
    assert any(m.discounted == "negated" for m in t.matches if m.kind == "urgent")


@pytest.mark.parametrize(
    "text", ["死にたいと思わない日が一日もない", "死にたいと思う時が無いとは言えない"]
)
def test_a_second_negation_past_the_scope_still_cancels_the_first(
    rules: RuleSet, text: str
) -> None:
    assert "urgent.suicidal.wish" in counted(triage(rules, text))


@pytest.mark.parametrize("text", ["3日間食べ物がない", "もう3日お金がない、食べ物もない"])
def test_what_is_said_about_a_concept_word_does_not_negate_it(rules: RuleSet, text: str) -> None:
    assert triage(rules, text).urgent


@pytest.mark.parametrize(
    "text",
    [
        "死にたいと思ったことがないと言えば嘘になる",
        "死にたいと思ったことはないと言えば嘘になる",
        "消えたいと思ったことがないなんて嘘です",
        "しにだいとかじゃないと言えば嘘になる",  # the reading tier alike
    ],
)
def test_a_denial_the_writer_calls_a_lie_is_no_denial(rules: RuleSet, text: str) -> None:
    assert triage(rules, text).urgent


@pytest.mark.parametrize(
    "text", ["死にたいと思ったことはない、嘘じゃない", "しにだいとかじゃない、嘘じゃない"]
)
def test_a_denial_said_to_be_no_lie_stands(rules: RuleSet, text: str) -> None:
    assert not triage(rules, text).urgent


@pytest.mark.parametrize(
    "text",
    [
        "死にたいと思わない人がうらやましい",
        "死にたいと思ったことない人には分からない",
        "死にたいと思ったことがない人なんていないでしょ",
    ],
)
def test_a_negation_that_describes_other_people_is_no_denial(rules: RuleSet, text: str) -> None:
    assert "urgent.suicidal.wish" in counted(triage(rules, text))


def test_nothing_but_dying_in_the_potential_is_no_denial(rules: RuleSet) -> None:
    # しか cancels the negation of 考えられない only when the scope reaches it
    assert "urgent.suicidal.wish" in counted(triage(rules, "死にたいとしか考えられない"))
    assert not triage(rules, "死にたいとは考えられない").urgent


@pytest.mark.parametrize("text", ["死にたくないけど生きたくもない", "正直、生きたくはない"])
def test_not_wanting_to_live_with_a_particle_between_is_urgent(rules: RuleSet, text: str) -> None:
    assert "urgent.suicidal.no_will_to_live" in counted(triage(rules, text))


def test_wanting_to_live_without_money_is_not_the_same(rules: RuleSet) -> None:
    assert not triage(rules, "生きたいけどお金がない").urgent


# -- 4 for し ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("今夜4ぬ", "urgent.suicidal.wish"),
        ("4ぬことばかり考えてる", "urgent.suicidal.clinical"),
        ("もう4んでしまいたい", "urgent.suicidal.contracted"),
    ],
)
def test_four_for_shi_is_read_by_the_lemma_rules(rules: RuleSet, text: str, rule: str) -> None:
    assert rule in counted(triage(rules, text))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("4にたいくらい恥ずかしい", "idiom"),
        ("4にたいとかではないです", "negated"),
        ("昔は4にたいと思ってたけど今は大丈夫です", "resolved-past"),
    ],
)
def test_four_for_shi_is_judged_like_the_kanji(rules: RuleSet, text: str, why: str) -> None:
    t = triage(rules, text)
    assert not t.urgent
    kanji = triage(rules, text.replace("4", "死"))
    assert not kanji.urgent
    assert any(m.discounted == why for m in t.matches if m.kind == "urgent")


@pytest.mark.parametrize("text", ["4人で遊んだ", "4年生です", "14ぬいぐるみ", "4日に会おう"])
def test_a_four_that_is_a_number_stays_a_number(text: str) -> None:
    infos = get_analyser().analyse(text).infos
    assert all(info.lemma != "死ぬ" for info in infos)


# -- resolved past ------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["死にたい", "しにだい", "死にたみ", "じさつしたい", "自殺したい"])
@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("昔は{}と思っていたけど今は大丈夫です。", False),
        ("中学のときは毎日{}って思ってた。今は楽しくやってます。", False),
        ("昔は{}と思ってたけど今は大丈夫。でも最近また{}。", True),
        ("昔は{}って思ってた。今は大丈夫。でも今日は{}。", True),
        ("去年{}と思ってた。今も{}。", True),
    ],
)
def test_every_tier_judges_resolved_past_alike(
    rules: RuleSet, word: str, frame: str, expected: bool
) -> None:
    """Past ideation said to be over is discounted whichever tier reads the word, and
    a present wish after it is not (the reading tier reads しにだい, 死にたみ, じさつ)."""
    assert triage(rules, frame.replace("{}", word)).urgent is expected
