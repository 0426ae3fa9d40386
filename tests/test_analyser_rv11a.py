"""Analyser gaps that lost urgent mails in review rv11a (eleventh session; all mails synthetic).

The learned tier is switched off here, so each test shows what the rule tiers do on their
own: a gap the safety net happens to cover for one wording would stay open for the next.
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


# -- Okayama 死にとう (= 死にたく) --------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        # in a longer mail, where the few-words rule does not apply
        "部活でまた怒られた。家に帰っても居場所がないし、最近は死にとうなってくるんよ。どうしたらええ？",
        "先生には言えん。死にとうてしかたない。",
        "バイト先でも失敗ばっかり。しにとうなる日が増えた。",
    ],
)
def test_okayama_shinitou_in_a_longer_mail_is_a_wish_to_die(rules: RuleSet, text: str) -> None:
    t = triage(rules, text)
    assert t.urgent
    assert any(m.rule.startswith("urgent.suicidal") for m in t.urgent_reasons)


@pytest.mark.parametrize(
    "text",
    [
        "前はつらかったけど、今は死にとうないし大丈夫です。",
        "死にとうないけぇ、病院の予約の仕方を教えてほしい。",
        "お菓子にとうもろこしを入れてみた。",
        "それだけでは少しにとうてい足りん。",
    ],
)
def test_okayama_shinitou_denied_or_look_alike_is_not_urgent(rules: RuleSet, text: str) -> None:
    assert not triage(rules, text).urgent


# -- 〜ないと / 〜んと + a negative predicate: a condition, not a denial ----------------------


@pytest.mark.parametrize(
    "text",
    [
        "最近は自分を傷つけんと眠れんのよ",
        "リスカしないと学校に行けない",
        "ODせんと寝られん",
        "毎晩自分を傷つけないとダメになってる",
    ],
)
def test_unless_harming_myself_i_cannot_cope_is_not_a_denial(rules: RuleSet, text: str) -> None:
    t = triage(rules, text)
    assert t.urgent
    assert not any(m.discounted == "negated" for m in t.urgent_reasons)


@pytest.mark.parametrize(
    "text",
    [
        "自分を傷つけないと約束した",
        "もうリスカはしないと決めました",
        "死にたくないと思うようになった",
        "消えたいとは思わない。元気です",
        "もう自傷はせんと親に言った",
    ],
)
def test_a_promise_or_a_thought_after_nai_to_stays_a_denial(rules: RuleSet, text: str) -> None:
    assert not triage(rules, text).urgent


# -- a half-width space or an emoji between phrases ---------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "眠剤 ぜんぶ 飲んだ",
        "ロープ 買ってきた",
        "もう🥲むり",
        "眠剤💊ぜんぶ飲んだ",
        "ロープ🪢買ってきた",
    ],
)
def test_a_space_or_emoji_between_phrases_does_not_split_them(rules: RuleSet, text: str) -> None:
    assert triage(rules, text).urgent


def test_the_words_around_a_space_stay_apart_for_negation() -> None:
    """Phrase matching reads across the space; negation and exclusions do not."""
    a = get_analyser().analyse("もう 無理")
    assert a.sentences[0] != a.sentences[1]
    assert a.phrases[0] == a.phrases[1]


@pytest.mark.parametrize(
    "text",
    [
        "ロープ 買ってない",  # the space joins the phrase; the negation still denies it
        "ABC 無理",  # not between Japanese letters
        "今日は晴れ。😭 無理はしないでね",
        "もう😭",
    ],
)
def test_a_space_or_emoji_joins_nothing_else(rules: RuleSet, text: str) -> None:
    assert not triage(rules, text).urgent


# -- a katakana run whose hiragana reading starts with an interjection ----------------------


@pytest.mark.parametrize("text", ["ｵﾔｦｺﾛｽ", "オヤヲコロス"])
def test_katakana_starting_like_an_interjection_is_read_as_kana(rules: RuleSet, text: str) -> None:
    """おや + 殺す: the interjection is a stray reading, a verb follows it."""
    assert triage(rules, text).urgent


@pytest.mark.parametrize("text", ["ﾊｲﾜｶﾘﾏｼﾀ", "ｵｰｹｰ", "ｴｰﾄ、ｲｴﾛｰﾉﾍﾟﾝ"])
def test_katakana_interjections_alone_are_no_crisis(rules: RuleSet, text: str) -> None:
    assert not triage(rules, text).urgent


# -- a duty (〜ないといけない) is not the "unless" of finding 5 ----------------------------


@pytest.mark.parametrize(
    "text",
    [
        "死ぬほど眠いけど課題を終わらせないといけない。死ぬほど眠いけど課題を終わらせないと"
        "いけない。今日は天気が良かったので少しだけ散歩に出かけました",
        "レポートを終わらせないとならない。眠くて死ぬ。今日は晴れてよかった",
        "課題を終わらせないとだめ。死ぬほど眠い。今日は天気が良かった。課題を終わらせないとだめ",
    ],
)
def test_a_duty_to_finish_homework_does_not_count_as_finality(rules, text: str) -> None:
    assert not classify_text("相談", text, rules).urgent


@pytest.mark.parametrize("text", ["自分を傷つけんと落ち着かん", "リスカせんとやってられん"])
def test_cannot_cope_without_harm_stays_urgent_next_to_the_duty_rule(rules, text: str) -> None:
    assert classify_text("", text, rules).urgent


def test_a_duty_to_leave_home_tomorrow_is_acute_need(rules: RuleSet) -> None:
    """出ていかんといけん (must leave): a duty affirms the crisis phrase it follows."""
    assert classify_text("", "家賃が払えんけぇ明日には出ていかんといけん", rules).urgent


@pytest.mark.parametrize(
    "text",
    ["週末は収穫しにとうもろこし畑へ行きます", "勉強しにとうなんアジアに留学したい"],
)
def test_the_purpose_form_before_toumorokoshi_or_tounan_is_not_shinitou(
    rules: RuleSet, text: str
) -> None:
    assert not classify_text("", text, rules).urgent
