"""Urgent wording from review rv12a: what the shipped rules and the triage must flag now.

Each group has everyday or denying sentences that must stay quiet. Every mail is
synthetic and written for these tests (not the reviewer's probe sentences).
"""

from __future__ import annotations

import pytest

from intake.rules import RuleSet
from tests.helpers import urgent_reasons as reasons

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
        "死にたいなんて思ったことは一度もない",
    ],
)
def test_a_plain_denial_stays_a_denial(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text)


# -- group 2: taking one's life in formal words, nowhere to sleep, no money, Kansai あらへん


@pytest.mark.parametrize(
    "text",
    [
        "ここ数日、自らの命を絶つことばかり考えております",
        "もう命を絶ちたいです",
        "命を断つしかないと思っています",
        "命を絶つ方法を調べてしまいました",
        "正直なところ、生きていくのも限界です",
        "僕が死んでも誰も悲しまないと思います",
        "今日中に本当に死んでしまいそうです",
    ],
)
def test_formal_and_indirect_wishes_to_end_ones_life_are_suicidal(
    rules: RuleSet, text: str
) -> None:
    assert {"urgent.suicidal.clinical", "urgent.suicidal.soft", "urgent.suicidal.wish"} & (
        reasons(rules, text)
    )


@pytest.mark.parametrize(
    "text",
    [
        "もう所持金も尽きてしまい、何も買えません",
        "今夜泊まる場所がないです",
        "泊まれる場所がなくてとても困っています",
        "漫画喫茶に泊まるお金もなくなりました",
        "先週から河川敷で野宿してます",
        "今夜寝るとこあらへん",
    ],
)
def test_money_gone_and_no_bed_tonight_are_acute_need(rules: RuleSet, text: str) -> None:
    assert reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "薬を多めに飲んでしまって、いま頭がぼーっとする",
        "ライターの火を手首に押し付けた",
        "傷が深いから縫うことになりそう",
    ],
)
def test_too_many_pills_a_flame_on_the_skin_and_a_cut_needing_stitches_are_self_harm(
    rules: RuleSet, text: str
) -> None:
    assert reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "命を絶つつもりはありません。ご安心ください",
        "ニュースで俳優が命を絶ったと聞いて驚いた",
        "お腹がすいて死んでしまいそう、早くお昼にしたい",
        "夏休みにキャンプで野宿してた話をしたい",
        "旅行で泊まる場所がないので宿を予約したい",
        "風邪薬を多めに飲んだら翌日には治った",
        "花火の火を手に当てないよう子どもに注意した",
        "そんなことあらへん、大丈夫やで",
    ],
)
def test_news_hunger_jokes_camping_travel_and_cold_medicine_are_not_urgent(
    rules: RuleSet, text: str
) -> None:
    assert not reasons(rules, text)


# -- group 3: sexual abuse told without a body part -----------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "義父が深夜に私の部屋に入ってくるのが怖い",
        "部活のコーチに触られたことを誰にも言えない",
        "いやだって言ったのにされました",
        "同意していないのにされて、誰にも話せない",
        "バイト先の先輩に体の関係を迫られています",
    ],
)
def test_a_night_visitor_a_touch_by_a_named_person_or_sex_after_a_no_is_sexual_violence(
    rules: RuleSet, text: str
) -> None:
    assert {"urgent.violence.sexual", "urgent.violence.sexual.unnamed"} & reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "父が夜に部屋に来て、志望校の話をした",
        "兄が夜中に部屋に入ってきて充電器を持っていった",
        "先生に肩を触られて、よく頑張ったと褒められた",
        "いやだって言ったのに掃除当番にされた",
        "同意していないのに勝手に契約を更新された",
        "取引先に関係修復を求められた",
    ],
)
def test_a_brother_borrowing_a_charger_praise_chores_and_contracts_are_not_sexual_violence(
    rules: RuleSet, text: str
) -> None:
    # only the rules: the learned tier has its own view of a brother at midnight
    assert not {"urgent.violence.sexual", "urgent.violence.sexual.unnamed"} & reasons(rules, text)


# -- group 4: sexual violence and other crises in the residents' own languages ---------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("Someone raped me at the dormitory", "urgent.foreign.en.sexual"),
        ("My supervisor forced me to have sex with him", "urgent.foreign.en.sexual"),
        ("My stepfather sexually assaulted me when I was 14", "urgent.foreign.en.sexual"),
        ("我上个月被性侵了，不敢告诉别人", "urgent.foreign.zh.sexual"),
        ("Em bị quấy rối tình dục ở công ty", "urgent.foreign.vi.sexual"),
        ("O dono da casa abusou de mim", "urgent.foreign.pt.sexual"),
        ("Hinipuan ako ng amo ko kahapon", "urgent.foreign.tl.sexual"),
        ("साहुले मलाई बलात्कार गर्‍यो", "urgent.foreign.ne.sexual"),
    ],
)
def test_rape_assault_and_forced_sex_in_foreign_languages_are_violence(
    rules: RuleSet, text: str, rule: str
) -> None:
    assert rule in reasons(rules, text)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("Não tenho lugar para dormir hoje", "urgent.foreign.pt"),
        ("Eu estou me cortando todos os dias", "urgent.foreign.pt"),
        ("我没有地方睡了", "urgent.foreign.zh"),
        ("म अब मर्न चाहन्छु", "urgent.foreign.south_asia"),
        ("aba marna chahanchu", "urgent.foreign.other"),
        ("कृपया बचाउनुहोस्", "urgent.foreign.short.help.ne"),
        ("Wala na akong matutulugan", "urgent.foreign.tl"),
        ("Em không còn chỗ để ngủ", "urgent.foreign.vi"),
    ],
)
def test_nowhere_to_sleep_cutting_wanting_to_die_and_help_in_foreign_languages(
    rules: RuleSet, text: str, rule: str
) -> None:
    assert rule in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "I was never raped, I only want to ask about the visa renewal",
        "Your kind reply really touched me, thank you",
        "The company has a sexual harassment seminar on Monday",
        "我没有被性侵，只是想咨询签证",
        "Tôi không bị quấy rối, chỉ muốn hỏi về visa",
        "Não fui abusada, só quero informações sobre o visto",
        "Me cortei cozinhando ontem, mas já está bem",
        "मलाई भिसाको फारम भर्न मद्दत गर्नुहोस्, म अर्को हप्ता आवेदन दिन चाहन्छु",
    ],
)
def test_denials_thanks_seminars_kitchen_cuts_and_form_help_are_not_foreign_crises(
    rules: RuleSet, text: str
) -> None:
    assert not reasons(rules, text)


# -- group 5: a prevention campaign is not a disclosure ---------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "DV防止のセミナーの申し込み方法を教えてください",
        "学校で児童虐待防止のパンフレットを配りたいので、資料を送ってほしいです",
    ],
)
def test_a_prevention_seminar_or_leaflet_is_not_violence(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text)


def test_abuse_told_next_to_a_prevention_poster_is_still_violence(rules: RuleSet) -> None:
    text = "駅で虐待防止のポスターを見て連絡しました。義父に虐待されてて家に帰りたくない"
    assert {"urgent.violence", "urgent.violence.concrete"} & reasons(rules, text)


# -- group 6: less common wording (finding 9) ---------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "誰かと話したい。一人でおると何するかわからん",
        "私の物は全部処分してもらって構いません",
        "このまま車で崖に突っ込みたい",
        "もうおらんようになりてぇわ",
        "夫に床に叩きつけられた",
        "罰だと言われて物置に閉じ込められる",
    ],
)
def test_alone_and_unsafe_belongings_a_car_plan_okayama_wish_and_being_thrown_are_urgent(
    rules: RuleSet, text: str
) -> None:
    assert reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "一人で何をすればいいかわからないので、手続きを教えてください",
        "古い家具は全部処分して引っ越します",
        "車で壁に突っ込んだらしいけど運転手は無事だった",
        "台風で雨が窓に叩きつけられる音がした",
        "エレベーターに閉じ込められたけどすぐ出られた",
    ],
)
def test_paperwork_moving_a_safe_driver_rain_and_a_lift_are_not_urgent(
    rules: RuleSet, text: str
) -> None:
    assert not reasons(rules, text)
