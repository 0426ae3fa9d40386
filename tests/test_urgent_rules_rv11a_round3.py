"""Urgent wording from the third round of review rv11a: what the shipped rules must flag now.

Each test names the rule that must carry the mail, so a learned-tier guess cannot hide a
rule that stopped matching, and each group has everyday sentences that must stay quiet.
Every mail is synthetic and written for these tests.
"""

from __future__ import annotations

import pytest

from intake.lemmas import analyse
from intake.rules import RuleSet
from tests.helpers import urgent_reasons as reasons

ROUND3 = {
    "urgent.violence.round3",
    "urgent.violence.sexual.round3",
    "urgent.acute_need.round3",
    "urgent.short.utilities",
    "urgent.self_harm.round3",
    "urgent.short.self_harm.blade",
    "urgent.foreign.en.self_harm",
    "urgent.suicidal.round3",
    "urgent.suicidal.round3.two",
    "urgent.short.farewell",
    "urgent.foreign.en.mixed",
    "reading.suicidal.round3",
    "reading.acute_need.hunger",
    "urgent.self_harm.emoji",
    "urgent.short.self_harm.emoji",
    "urgent.suicidal.emoji",
}


# -- group 1: violence, neglect and acute need, plain and Okayama -------------------------


@pytest.mark.parametrize(
    "text",
    [
        "父がまた食器投げよる",
        "夜になると台所で皿が割れる音がして、こわくて眠れん",
        "今日は家に帰りたくない。お母さんがこわいけぇ",
        "継母にご飯もらえんのよ",
    ],
)
def test_things_thrown_plates_breaking_fear_of_home_and_food_withheld_are_violence(
    rules: RuleSet, text: str
) -> None:
    assert "urgent.violence.round3" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "義父が一緒に風呂入れって言うんよ、もう高校生なのに",
        "知らん男にお金渡されて、断ったのについてきた",
    ],
)
def test_pressure_to_bathe_together_or_being_followed_after_money_is_sexual_violence(
    rules: RuleSet, text: str
) -> None:
    assert "urgent.violence.sexual.round3" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "鍵を開けてもらえん。寒い",
        "弟が怪我しとるのに病院に連れていってもらえない",
    ],
)
def test_locked_out_last_meal_days_ago_or_no_doctor_for_a_sibling_is_acute(
    rules: RuleSet, text: str
) -> None:
    assert "urgent.acute_need.round3" in reasons(rules, text)


@pytest.mark.parametrize("text", ["月曜に食べたのが最後です", "3日前に食べたんが最後"])
def test_the_last_meal_days_ago_as_the_sentences_end_is_acute(rules: RuleSet, text: str) -> None:
    assert "reading.acute_need.hunger" in reasons(rules, text)


def test_a_cut_utility_as_all_the_mail_says_is_acute(rules: RuleSet) -> None:
    assert "urgent.short.utilities" in reasons(rules, "水道止まった")


@pytest.mark.parametrize(
    "text",
    [
        "公園で子どもとボール投げよる",
        "皿が割れる音がしたけど猫が落としただけ",
        "台風で窓ガラスが割れる音がして怖かった",
        "寒いけぇ家に帰りたくない、もう少し遊ぶ",
        "共働きで親にご飯作ってもらえない日が多い",
        "お父さんが赤ちゃんを一緒にお風呂に入れてくれた",
        "おじさんにお年玉を渡された",
        "鍵を開けてもらえないか管理会社に聞いてみます",
        "鍵を開けてもらえないので外で待ちます。会議室の予約の件です",
        "歯医者逝ってきます",
        "昨日食べたのが最後のプリンだったかも",
        "熱があるけど病院は明日行きます",
        "停電で電気止まったけど一時間で戻りました。子ども会の件ですが、来月の予定表を送ります",
    ],
)
def test_games_accidents_bathing_a_baby_and_notices_are_not_round3_violence_or_need(
    rules: RuleSet, text: str
) -> None:
    assert not reasons(rules, text) & ROUND3


# -- group 2: self-harm ----------------------------------------------------------------


def test_cutting_as_the_only_way_to_cope_is_self_harm(rules: RuleSet) -> None:
    assert "urgent.self_harm.round3" in reasons(rules, "もう切らないとやってられない")


def test_a_blade_in_hand_as_all_the_mail_says_is_self_harm(rules: RuleSet) -> None:
    assert "urgent.short.self_harm.blade" in reasons(rules, "いまカミソリ握っとる")


@pytest.mark.parametrize("text", ["cutting again tonight", "I cut again", "sh again, sorry"])
def test_self_harm_in_english_shorthand_is_self_harm(rules: RuleSet, text: str) -> None:
    assert "urgent.foreign.en.self_harm" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "暑すぎて髪切らんとやってられん",
        "工作でカッター握って段ボールを切る練習をしました。来週の図工でも使う予定です",
        "I got my hair cut again",
        "my hours were cut again this month",
    ],
)
def test_haircuts_crafts_and_cut_hours_are_not_self_harm(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text) & ROUND3


# -- group 3: suicidal -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["〇にたい", "○にたいよ", "もう寿命売りたい", "人生無理ゲーすぎ、終わりたい"]
)
def test_a_circled_wish_selling_ones_life_or_a_game_lost_is_suicidal(
    rules: RuleSet, text: str
) -> None:
    assert "urgent.suicidal.round3" in reasons(rules, text)


@pytest.mark.parametrize("text", ["死に……たい", "少し旅に出ます。探さないでください", "⚰️入りたい"])
def test_a_broken_wish_a_journey_with_do_not_look_or_a_coffin_is_suicidal(
    rules: RuleSet, text: str
) -> None:
    assert "urgent.suicidal.round3.two" in reasons(rules, text)


def test_going_to_pass_away_as_all_the_mail_says_is_suicidal(rules: RuleSet) -> None:
    assert "urgent.short.farewell" in reasons(rules, "逝ってくるね")


@pytest.mark.parametrize("text", ["im done. もう疲れた", "life is hell. おわりたい"])
def test_english_giving_up_then_japanese_tiredness_is_suicidal(rules: RuleSet, text: str) -> None:
    assert "urgent.foreign.en.mixed" in reasons(rules, text)


@pytest.mark.parametrize("text", ["mou ikitakunai yo", "朝起きたくない。もう永遠に"])
def test_romaji_no_will_to_live_and_not_waking_forever_are_suicidal(
    rules: RuleSet, text: str
) -> None:
    assert "reading.suicidal.round3" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "〇〇に対して意見があります",
        "人生の最後は海の見える町で暮らしたい",
        "明日テスト、起きたくないけど頑張る",
        "I'm done with my homework. 疲れた",
        "塾もういきたくない",
        "今日は早く仕事終わりたい",
    ],
)
def test_placeholders_retirement_plans_and_homework_are_not_suicidal(
    rules: RuleSet, text: str
) -> None:
    assert not reasons(rules, text) & ROUND3


# -- group 4: crisis emoji named by regular expressions over the text --------------------


def test_every_emoji_still_ends_a_sentence_and_is_no_word() -> None:
    # review rv12b: kept as words, the crisis emoji split the phrases around them
    a = analyse("手首🔪やった😢もう")
    assert [i.surface for i in a.infos] == ["手首", "やっ", "た", "もう"]
    assert a.sentences[0] != a.sentences[1] == a.sentences[2] != a.sentences[3]


@pytest.mark.parametrize(
    "text",
    [
        "仕事のことで相談です。死に🔪たい。",
        "最近ずっとしんどいです。消え🩸たい。",
        "相談です。死に💊たいって思ってしまった",
        "相談です。リス🔪カした。",
    ],
)
def test_a_crisis_emoji_inside_a_crisis_phrase_does_not_hide_it(rules: RuleSet, text: str) -> None:
    assert reasons(rules, text)


@pytest.mark.parametrize(
    "text", ["ニュースで見た🔪父に殴られた", "事件のニュース🩸私も父に殴られてる", "歌詞🔪死にたい"]
)
def test_a_crisis_emoji_after_a_news_word_ends_its_sentence(rules: RuleSet, text: str) -> None:
    # the news word's "reported" discount stays in its own sentence (review rv12b)
    assert reasons(rules, text)


@pytest.mark.parametrize("text", ["太もも🔪", "今日もやった🩸"])
def test_a_knife_or_blood_emoji_on_a_limb_or_after_doing_it_is_self_harm(
    rules: RuleSet, text: str
) -> None:
    assert "urgent.self_harm.emoji" in reasons(rules, text)


def test_a_knife_emoji_as_all_the_mail_says_is_self_harm(rules: RuleSet) -> None:
    assert "urgent.short.self_harm.emoji" in reasons(rules, "😢🔪")


@pytest.mark.parametrize("text", ["🪢用意した", "💊まとめていった", "今夜🪦"])
def test_a_rope_all_the_pills_or_a_gravestone_soon_is_suicidal(rules: RuleSet, text: str) -> None:
    assert "urgent.suicidal.emoji" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "今日は家族で料理した🔪🍳楽しかった",
        "お墓参り🪦行ってきました",
        "宿題全部やった🎉",
        "風邪薬💊飲んで寝ます",
        "ひもの結び方🪢を習った",
        # review rv12b: the first emoji rules flagged these
        "包丁🔪",
        "料理中に指切った🩸",
        "足🩸擦りむいた",
        "今日もやった🔪料理頑張った",
        "今日は🪦参り",
        "父が🪦に入る日が来た、納骨の手続き",
        "ビタミン💊まとめて買った",
    ],
)
def test_cooking_graves_visited_and_medicine_taken_are_not_emoji_crises(
    rules: RuleSet, text: str
) -> None:
    assert not reasons(rules, text) & ROUND3
