"""Urgent wording from the second round of review rv11a: what the shipped rules must flag now.

Each test names the rule that must carry the mail, so a learned-tier guess cannot hide a
rule that stopped matching, and each group has everyday sentences that must stay quiet.
Every mail is synthetic and written for these tests.
"""

from __future__ import annotations

import pytest

from intake.rules import RuleSet
from intake.triage import classify_text
from tests.helpers import urgent_reasons as reasons

ROUND2 = {
    "urgent.self_harm.burn_hit",
    "urgent.self_harm.wound",
    "urgent.self_harm.overdose_told",
    "reading.self_harm.round2",
    "urgent.suicidal.run_over",
    "urgent.suicidal.dread_tomorrow",
    "reading.suicidal.round2",
    "urgent.foreign.en",
    "urgent.foreign.en.mixed",
    "urgent.acute_need.round2",
    "urgent.short.no_food_home",
    "reading.acute_need.hunger",
    "reading.acute_need.parents_away",
}


# -- group 1: self-harm, plain and Okayama ---------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "また根性焼きしてしもうた",
        "タバコで手首あぶってしまう",
        "ライターで太もも焼いた",
        "安全ピンで腕刺しよる",
        "夜になると壁に頭打ちつけてしまう",
    ],
)
def test_burning_pricking_or_hitting_oneself_is_self_harm(rules: RuleSet, text: str) -> None:
    assert "urgent.self_harm.burn_hit" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "縫うほど深く切ってしまった",
        "手首ざっくりやってもうた",
        "傷があるけぇ水着着れん",
        "痛いとほっとするんよ",
    ],
)
def test_a_deep_cut_hidden_scars_or_pain_that_calms_is_self_harm(rules: RuleSet, text: str) -> None:
    assert "urgent.self_harm.wound" in reasons(rules, text)


@pytest.mark.parametrize(
    "text", ["咳止め一瓶飲んだ", "ブロン一箱いった", "睡眠薬ためとる", "眠剤こっそり貯めてる"]
)
def test_a_bottle_of_cough_medicine_or_hoarded_sleeping_pills_is_an_overdose(
    rules: RuleSet, text: str
) -> None:
    assert reasons(rules, text) & {
        "urgent.self_harm.overdose_told",
        "urgent.self_harm.overdose",
    }


@pytest.mark.parametrize(
    "text", ["じしょうしちゃった", "じしょうがやめられん", "jishou yamerarenai"]
)
def test_jishou_in_kana_or_romaji_is_self_harm(rules: RuleSet, text: str) -> None:
    assert "reading.self_harm.round2" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "息子の反抗期に手を焼いている",
        "ライターで炙りチーズを作った",
        "裁縫の授業で針を使った",
        "薬のために休みをとる",
        "膝を切ったけど縫うほどではなかった",
        "肩が痛いと整体に行く",
        "自称アイドルしてる人がクラスにいる",
        "風邪薬を一回分飲んだ",
    ],
)
def test_everyday_burns_needles_medicine_and_pain_are_not_self_harm(
    rules: RuleSet, text: str
) -> None:
    assert not reasons(rules, text)


def test_a_burn_done_by_someone_else_is_violence_not_self_harm(rules: RuleSet) -> None:
    found = reasons(rules, "姉にライターで腕をあぶられた")
    assert "urgent.violence.concrete" in found
    assert "urgent.self_harm.burn_hit" not in found


@pytest.mark.parametrize("text", ["kusuri zenbu nonda", "すいみんやくぜんぶのんだ"])
def test_all_the_pills_taken_in_kana_or_romaji_is_an_overdose(rules: RuleSet, text: str) -> None:
    assert reasons(rules, text) & {"reading.self_harm.round2", "urgent.self_harm.overdose_told"}


# -- group 2: suicidal -----------------------------------------------------------------


@pytest.mark.parametrize("text", ["電車に轢かれたい", "トラックに轢かれたらええのに"])
def test_wanting_to_be_run_over_is_suicidal(rules: RuleSet, text: str) -> None:
    assert "urgent.suicidal.run_over" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "いしょかいてある",
        "生きててもしゃーない",
        "なんで生きてるんだろう",
        "明日が来るのが怖い。来んでほしいんよ",
    ],
)
def test_a_kana_note_or_okayama_no_use_living_is_suicidal(rules: RuleSet, text: str) -> None:
    assert "reading.suicidal.round2" in reasons(rules, text)


@pytest.mark.parametrize(
    "text", ["明日が来るのがこわい。来ないでほしい", "朝には冷たくなってるかもね"]
)
def test_tomorrow_wished_away_or_cold_by_morning_is_suicidal(rules: RuleSet, text: str) -> None:
    assert "urgent.suicidal.dread_tomorrow" in reasons(rules, text)


@pytest.mark.parametrize(
    "text", ["ほんまdieしたい", "unalive したくなる", "I just want to unalive myself"]
)
def test_die_and_unalive_mixed_into_japanese_are_suicidal(rules: RuleSet, text: str) -> None:
    assert reasons(rules, text) & {"urgent.foreign.en", "urgent.foreign.en.mixed"}


@pytest.mark.parametrize(
    "text",
    [
        "雪の日に車に轢かれそうになった",
        "ハロウィンのいしょうかいた",
        "明日の朝は冷たくなるかも、上着いるね",
        "明日のテストが来るのが怖いけど頑張る",
        "diet したい",
    ],
)
def test_near_misses_costumes_weather_and_diets_are_not_suicidal(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text)


# -- group 3: acute need ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["よっかなんも食べとらん", "ふつかも食べてない", "yokka nanimo tabetenai"]
)
def test_days_without_food_counted_in_kana_are_acute(rules: RuleSet, text: str) -> None:
    assert "reading.acute_need.hunger" in reasons(rules, text)


@pytest.mark.parametrize("text", ["財布0", "所持金０", "水も出ない。寒い"])
def test_no_money_at_all_or_no_water_is_acute(rules: RuleSet, text: str) -> None:
    assert "urgent.acute_need.round2" in reasons(rules, text)


def test_no_food_at_home_as_all_the_mail_says_is_acute(rules: RuleSet) -> None:
    assert "urgent.short.no_food_home" in reasons(rules, "家のご飯ないんよ")


@pytest.mark.parametrize("text", ["父が帰ってこない。ご飯もない", "ご飯ない。お母さん帰ってこんし"])
def test_a_parent_away_and_no_food_is_acute(rules: RuleSet, text: str) -> None:
    assert "reading.acute_need.parents_away" in reasons(rules, text)


@pytest.mark.parametrize("text", ["親が4日帰ってこん", "ママが二日も帰ってこない"])
def test_a_child_counting_the_days_a_parent_is_away_is_acute(rules: RuleSet, text: str) -> None:
    assert "reading.acute_need.parents_away" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "父が出張で3日帰ってこない",
        "親が3日帰ってこない、旅行らしい",
        "出張で親が2日帰ってこない",
        "家のご飯ないけぇ、今日は友達とラーメン食べて帰るね",
        "水も飲んだけど声が出ない",
        "ダイエット中で朝から何も食べてない",
    ],
)
def test_a_trip_a_meal_out_or_a_sore_throat_is_not_acute(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text) & ROUND2


# -- review rv11b F6: ordinary mail the new rules flagged ---------------------------------


@pytest.mark.parametrize(
    "text",
    ["今日も切った、前髪", "昨日切った、髪", "明日テストが来るのが怖い。来ないでほしい"],
)
def test_hair_named_after_the_verb_and_a_dreaded_test_are_not_urgent(
    rules: RuleSet, text: str
) -> None:
    assert not classify_text("", text, rules).urgent


@pytest.mark.parametrize("text", ["今日も切った", "明日が来るのが怖い。来んでほしい"])
def test_cutting_alone_and_dreading_the_day_itself_stay_urgent(rules: RuleSet, text: str) -> None:
    assert classify_text("", text, rules).urgent
