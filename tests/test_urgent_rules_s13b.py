"""Urgent wording from session 13 (h-rules5): the last misses and false alarms of this
session's reviews, each beside its look-alike.

Urgent cases name the rule expected; quiet cases are checked on the rules without the
learned tier, so a test says what the rules do. Every mail is synthetic.
"""

from __future__ import annotations

import pytest

from intake.rules import RuleSet
from tests.helpers import urgent_reasons as reasons

# -- misses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("明日が来てほしくない", "urgent.suicidal.no_tomorrow"),
        ("明日なんて来てほしくない", "urgent.suicidal.no_tomorrow"),
        ("明日なんて来なければいい", "urgent.suicidal.soft"),
        ("先輩にホテルに連れていかれた", "urgent.violence.sexual.hotel"),
        ("先輩に無理やりホテルに連れていかれた", "urgent.violence.sexual.hotel"),
        ("知らない人にホテルに連れていかれた", "urgent.violence.sexual.hotel"),
        ("おじさんにホテルに連れて行かれた", "urgent.violence.sexual.hotel"),
        ("お父さんが一緒にお風呂に入ろうとしてくる", "urgent.violence.sexual.bath"),
        ("兄が一緒にお風呂に入ろうとしてくる", "urgent.violence.sexual.bath"),
        ("義父がお風呂一緒に入ろうとする", "urgent.violence.sexual.bath"),
        ("おじさんが一緒にお風呂入ろうとしてくる", "urgent.violence.sexual.bath"),
        ("駅にいるけど帰れない。今夜どうしよう", "urgent.acute_need.stranded"),
        ("駅にいるけど帰れない。お金ない", "urgent.acute_need.stranded"),
        ("駅にいるけど帰れない。財布もない", "urgent.acute_need.stranded"),
        ("駅にいるけど帰れない。行くところもない", "urgent.acute_need.stranded"),
        ("電車賃もない、帰れない", "urgent.acute_need.stranded"),
        ("スマホの中身全部消した。もういいや", "urgent.farewell.wiped"),
        ("連絡先全部消した。もういい", "urgent.farewell.wiped"),
        ("切ってたのがまた始まった", "urgent.self_harm.relapse"),
        ("今すぐ電話ください", "urgent.short.help.call"),
        ("誰か助けてくれんかのう。もうえらい", "urgent.short.help.call"),
    ],
)
def test_wording_the_reviews_found_missing_is_urgent(rules: RuleSet, text: str, rule: str) -> None:
    assert rule in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        # a dreaded test, not tomorrow itself; a visitor
        "明日テストが来てほしくない笑",
        "友達が明日来てほしくない",
        # a school trip, a hotel lunch
        "修学旅行でホテルに連れていかれた",
        "先輩にホテルのランチに連れていかれた",
        # a little brother asking
        "弟が一緒にお風呂入ろうって",
        # a stopped train, with no money or night named
        "駅にいるけど電車止まってて帰れない",
        "終電逃して駅にいるけど帰れない、ホテルに泊まる",
        # photos replaced
        "写真全部消した。もういいや、新しく撮る",
        # a haircut
        "髪切ってた",
        "髪を切るのがまた始まった",
        # the father's own bath
        "お父さんがお風呂に入ろうとしたら電話が鳴った",
        # a holiday ending
        "夏休み終わるから明日が来てほしくない",
        # praise for a child
        "お兄ちゃんはもう3歳、えらいね",
    ],
)
def test_look_alikes_of_the_misses_stay_quiet(rules_without_learned: RuleSet, text: str) -> None:
    assert not reasons(rules_without_learned, text)


# -- false alarms, each beside the crisis that must stay urgent ---------------------------------


@pytest.mark.parametrize(
    "text",
    [
        # grief for a grandmother who has died, not a person gone missing
        "おばあちゃんがいなくなって寂しい、認知症だったから",
        "祖母がいなくなって淋しい。認知症だったし",
        # a time, not a cause: cooking before mother gets angry
        "母が怒る前に包丁出して料理した",
        # えらい as praise
        "生きるのがえらいってばあちゃんに褒められた",
        # drumming
        "うち叩くの好き、太鼓部だから",
        # beaten at a game (Nepali)
        "भाइले मलाई खेलमा पिट्यो हाहा",
    ],
)
def test_grief_cooking_praise_drumming_and_games_are_quiet(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert not reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("おばあちゃんがおらんなった。認知症なんよ", "urgent.acute_need.missing_person"),
        ("母がいなくなった。朝から探してる", "urgent.acute_need.missing_person"),
        ("酔うと包丁出してくる", "urgent.violence.rv13.blade"),
        ("キレたらナイフ取り出した", "urgent.violence.rv13.blade"),
        ("母親が酔ったら包丁取り出してきて怖い", "urgent.violence.rv13.blade"),
        ("怒って包丁を出してきた", "urgent.violence.rv13.blade.near"),
        ("生きるのがえらい", "urgent.suicidal.living_exhausting"),
        ("母がうち叩く", "urgent.violence.threat.rv13"),
        ("बुबाले मलाई पिट्यो", "urgent.foreign.rv13.ne"),
        ("कम्पनीमा मलाई हाकिमले पिट्छ", "urgent.foreign.rv13.ne"),
    ],
)
def test_the_crisis_beside_each_false_alarm_stays_urgent(
    rules: RuleSet, text: str, rule: str
) -> None:
    assert rule in reasons(rules, text)
