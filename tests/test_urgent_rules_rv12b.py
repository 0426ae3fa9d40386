"""Ordinary mail that session 12's new urgent wording flagged (differential review rv12b).

Each group narrows one rule: the everyday sentences must stay quiet, and the urgent
wording the rule was written for must still raise the alarm through the same rule. The
reviewer's sentences are kept with our own; every mail is synthetic.
"""

from __future__ import annotations

import pytest

from intake.rules import RuleSet
from tests.helpers import urgent_reasons as reasons

# Ordinary mail: (text, the rule that used to flag it). The whole mail must be quiet.
ORDINARY = [
    # 1. 死んじゃいそう with a laugh or an everyday cause
    ("笑いすぎて本当に死んじゃいそう", "urgent.suicidal.wish"),
    ("暑すぎてこのまま死んじゃいそう笑", "urgent.suicidal.wish"),
    ("締め切りが多すぎて今日中に死んじゃいそう(笑)", "urgent.suicidal.wish"),
    ("友達のネタが面白くて本当に死んじゃいそう笑", "urgent.suicidal.wish"),
    # 2. a thing that nobody would miss
    ("このフォルダは消えても誰も困らない", "urgent.suicidal.soft"),
    ("このデータは消えても誰も気づかない", "urgent.suicidal.soft"),
    ("古い写真は消えても誰も困らないので整理します", "urgent.suicidal.soft"),
    # 3. the city's own poster
    ("命を絶つことを考える前に相談してほしい、というポスター", "urgent.suicidal.clinical"),
    ("命を絶つことを考える前に電話を、という啓発チラシを見ました", "urgent.suicidal.clinical"),
    # 4. a burn at a barbecue
    ("BBQで火に手を当ててしまい軽いやけど", "urgent.self_harm.instrument"),
    ("焚き火で火に手を当てて温まった", "urgent.self_harm.instrument"),
    # 5. a thing or a pet, not a person
    ("スマホが床に叩きつけられて画面が割れました", "urgent.violence.concrete"),
    ("猫がベランダに閉じ込められていました", "urgent.violence.concrete"),
    ("犬が物置に閉じ込められていたのを近所の人が見つけた", "urgent.violence.concrete"),
    # 6. a figure touched, a baby
    ("大事なフィギュアを兄に触られた", "urgent.violence.sexual.unnamed"),
    ("赤ちゃんが知らない人に触られると泣きます", "urgent.violence.sexual.unnamed"),
    ("集めているカードを先輩に触られて嫌だった", "urgent.violence.sexual.unnamed"),
    # 7. an earthquake
    ("地震で食器が割れる音がして怖かった", "urgent.violence.round3"),
    ("余震で皿が割れる音がしてこわかった", "urgent.violence.round3"),
    # 8. a fall
    ("息子が転んで額の傷が深く、3針縫いました", "urgent.self_harm.wound"),
    ("自転車で転倒して膝の傷が深く、縫うことになった", "urgent.self_harm.wound"),
    # 9. travel
    ("今日泊まる場所がないので、駅の近くのホテルを教えてください", "urgent.acute_need"),
    ("泊まるお金がないので日帰り旅行にしました", "urgent.acute_need"),
    ("Não tenho onde ficar em Tóquio durante a viagem", "urgent.foreign.pt"),
    ("我们旅行没有地方住，请推荐酒店", "urgent.foreign.zh"),
    ("Không còn chỗ để ở gần ga, khách sạn nào còn phòng?", "urgent.foreign.vi"),
    # 10. a request for directions to an emergency clinic
    (
        "日曜で弟の熱があるけど病院に連れていってもらえないか、救急の案内を",
        "urgent.acute_need.round3",
    ),
    # 11. finished homework, tired
    ("Homework finished, I'm done! 疲れた〜", "urgent.foreign.en.mixed"),
    ("I'm so done! 疲れたー", "urgent.foreign.en.mixed"),
    ("Exams over, I'm just done! 疲れた〜", "urgent.foreign.en.mixed"),
    # 12. a kind or an ordinary touch
    ("He touched me deeply with his speech", "urgent.foreign.en.sexual"),
    ("The coach touched me lightly to fix my posture", "urgent.foreign.en.sexual"),
    ("My dad always touches me on the head", "urgent.foreign.en.sexual"),
    ("The teacher touched me on the arm", "urgent.foreign.en.sexual"),
    # 13. bullying (hiếp đáp, ức hiếp) is not rape (hiếp dâm)
    ("Con tôi bị hiếp đáp ở trường", "urgent.foreign.vi.sexual"),
    ("Sếp ức hiếp tôi mỗi ngày", "urgent.foreign.vi.sexual"),
    # 14. the news and a film's plot
    ("新闻说她被强奸了", "urgent.foreign.zh.sexual"),
    ("这部电影讲的是一个女孩被性侵后的故事", "urgent.foreign.zh.sexual"),
]


@pytest.mark.parametrize(("text", "rule"), ORDINARY)
def test_ordinary_mail_the_new_wording_flagged_is_quiet(
    rules: RuleSet, text: str, rule: str
) -> None:
    assert not reasons(rules, text)


# Ordinary mail the narrowed rule must leave alone; the learned tier has its own view of
# these, so only the rule is checked.
ORDINARY_RULE_ONLY = [
    ("Wala akong matutulugan sa Tokyo sa biyahe namin", "urgent.foreign.tl"),
    ("My brother touched me on the shoulder to wake me up", "urgent.foreign.en.sexual"),
]


@pytest.mark.parametrize(("text", "rule"), ORDINARY_RULE_ONLY)
def test_the_narrowed_rule_leaves_a_trip_or_a_tap_on_the_shoulder_alone(
    rules: RuleSet, text: str, rule: str
) -> None:
    assert rule not in reasons(rules, text)


# Urgent wording each narrowed rule was written for: (text, the rule that must flag it).
URGENT = [
    ("2営業日も待てません。今日中に死んでしまいそうです。", "urgent.suicidal.wish"),
    ("もうこのまま死んでしまいそう", "urgent.suicidal.wish"),
    ("私なんか消えても誰も困らない", "urgent.suicidal.soft"),
    ("消えても誰も気づかないと思う", "urgent.suicidal.soft"),
    ("命を絶つことばかり考えてしまう", "urgent.suicidal.clinical"),
    ("火を腕に押し付けた", "urgent.self_harm.instrument"),
    ("ライターの火を腕に当てた", "urgent.self_harm.instrument"),
    ("自分で火を手首に当てています", "urgent.self_harm.instrument"),
    ("夫に床に叩きつけられた", "urgent.violence.concrete"),
    ("罰だと言われて物置に閉じ込められる", "urgent.violence.concrete"),
    ("父に猫が床に叩きつけられるのを見た", "urgent.violence.concrete"),
    ("先生に触られた", "urgent.violence.sexual.unnamed"),
    ("知らない男に触られた", "urgent.violence.sexual.unnamed"),
    ("体を兄に触られた", "urgent.violence.sexual"),
    ("赤ちゃんの頃から父に触られてきた", "urgent.violence.sexual.unnamed"),
    # praise is part of grooming: a touch with praise stays urgent (rv12b item 6 left alone)
    ("先生に触られて、褒められたけど気持ち悪い", "urgent.violence.sexual.unnamed"),
    ("夜になると台所で皿が割れる音がして、こわくて眠れん", "urgent.violence.round3"),
    ("縫うくらい深く切ってしまった", "urgent.self_harm.wound"),
    ("今夜泊まる場所がないです", "urgent.acute_need"),
    ("今日泊まる場所がなくてホテル代もない", "urgent.acute_need"),
    ("Não tenho onde dormir hoje", "urgent.foreign.pt"),
    ("Wala akong matutulugan ngayong gabi", "urgent.foreign.tl"),
    ("我没有地方住了", "urgent.foreign.zh"),
    ("Tôi không còn chỗ để ở", "urgent.foreign.vi"),
    # a hotel named as too dear is need, not travel
    ("Tôi không có chỗ ở, khách sạn thì quá đắt", "urgent.foreign.vi"),
    ("我没有地方住，酒店太贵了", "urgent.foreign.zh"),
    ("Não tenho onde dormir, hotel é caro demais", "urgent.foreign.pt"),
    ("Wala akong matutulugan, mahal ang hotel", "urgent.foreign.tl"),
    ("旅行中に財布を盗まれて今夜泊まる場所がない", "urgent.acute_need"),
    ("今日泊まる場所がないし、ホテルも予約できない", "urgent.acute_need"),
    ("弟が怪我しとるのに病院に連れていってもらえない", "urgent.acute_need.round3"),
    ("I'm done. もう終わりたい", "urgent.foreign.en.mixed"),
    ("I'm done. もう疲れた", "urgent.foreign.en.mixed"),
    ("I'm done. 疲れた", "urgent.foreign.en.mixed"),
    ("I'm so done! もう疲れたー", "urgent.foreign.en.mixed"),
    ("He touched me", "urgent.foreign.en.sexual"),
    ("He touched me on my thigh", "urgent.foreign.en.sexual"),
    ("My stepdad keeps touching me at night", "urgent.foreign.en.sexual"),
    ("Tôi bị hiếp dâm", "urgent.foreign.vi.sexual"),
    ("Anh ta hiếp tôi", "urgent.foreign.vi.sexual"),
    ("Tôi bị hiếp", "urgent.foreign.vi.sexual"),
    ("我上个月被性侵了，不敢告诉别人", "urgent.foreign.zh.sexual"),
    ("我妹妹被强奸了", "urgent.foreign.zh.sexual"),
]


@pytest.mark.parametrize(("text", "rule"), URGENT)
def test_the_wording_each_narrowed_rule_was_written_for_stays_urgent(
    rules: RuleSet, text: str, rule: str
) -> None:
    assert rule in reasons(rules, text)
