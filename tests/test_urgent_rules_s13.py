"""Urgent wording from session 13 (h-rules4): misses the probes rv12a and rv11a left open,
and false alarms narrowed without losing the crisis they sit next to.

Each group pairs mails that must be flagged (the probe's wording and wording written for
these tests) with look-alikes that must stay quiet. Quiet cases are checked on the rules
without the learned tier, so a test says what the rules do (the learned tier may still add
urgency on its own, which is its job). Every mail is synthetic.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from intake.rules import RuleSet, check_rules
from tests.helpers import urgent_reasons as reasons

# -- group 1: misses of the probe rv12a still open after session 12 -------------------------


@pytest.mark.parametrize(
    "text",
    [
        "叔父にいやなことをされた",
        "叔父にいやなことされた。小さいころからずっと",
        "継父に変なことをされて眠れない",
        "親戚のおじさんにエッチなことをされた",
    ],
)
def test_a_relative_doing_something_horrible_to_the_writer_is_sexual_violence(
    rules: RuleSet, text: str
) -> None:
    assert "urgent.violence.sexual.unsaid" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    ["店員にいやなことを言われた", "兄にいやなことを言われた", "先生にいやなことを頼まれた"],
)
def test_horrible_words_or_an_unwelcome_request_are_not_sexual_violence(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert not reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    "text",
    [
        "動画を撮られて、誰かに言ったらネットに流すって言われた",
        "動画を撮られて、言うこと聞かないと流すって言われた",
        "写真撮られて、別れたらネットにばらまくって脅されてる",
    ],
)
def test_images_taken_and_a_threat_to_spread_them_is_sextortion(rules: RuleSet, text: str) -> None:
    assert "urgent.violence.sexual.images_taken" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "体育祭の動画を流すって先生が言ってた",
        "文化祭で写真を撮られた。あとでスライドで流すって言われた",
    ],
)
def test_a_school_video_shown_at_an_event_is_no_threat(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert not reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    "text",
    ["どうしたらいいかわからない、もう限界", "もう限界、助けて", "誰か助けて。もう無理"],
)
def test_a_short_mail_at_the_end_of_its_tether_is_a_cry_for_help(rules: RuleSet, text: str) -> None:
    assert "urgent.short.help.lost" in reasons(rules, text)


def test_homework_at_its_limit_is_not_a_cry_for_help(rules_without_learned: RuleSet) -> None:
    assert not reasons(rules_without_learned, "宿題わからない、もう限界")


@pytest.mark.parametrize("text", ["今夜決行する", "明日決行します", "もうすぐ決行。さようなら"])
def test_carrying_it_out_tonight_with_no_event_named_is_suicidal(rules: RuleSet, text: str) -> None:
    assert "urgent.suicidal.carried_out" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "明日の文化祭は雨天決行です",
        "今夜のライブは予定通り決行します",
        "明日の試合は決行されるのかな",
    ],
)
def test_an_event_that_goes_ahead_is_not_a_plan(rules_without_learned: RuleSet, text: str) -> None:
    assert not reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    "text",
    [
        "貯金全部親の口座に移した。あとは任せた",
        "あとは任せた。貯金全部親の口座に移した",
        "今までありがとう、あとはよろしく",
    ],
)
def test_handing_everything_over_after_a_farewell_cue_is_a_goodbye(
    rules: RuleSet, text: str
) -> None:
    assert "urgent.farewell.handover" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "資料は送りました。あとはよろしくお願いします",
        "今日は私が休むので、あとは任せた",
        "あとはよろしく。荷物は全部送ったので",
        "口座に振り込みました。あとはよろしくお願いします",
    ],
)
def test_a_work_or_moving_handover_is_not_a_goodbye(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert not reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    "text",
    [
        "もう自分を保てそうにありません",
        "お手数をおかけいたしますが、至急ご連絡いただけますと幸いです。"
        "もう自分を保てそうにありません。",
        "正気を保てない。誰か話を聞いて",
    ],
)
def test_a_writer_who_cannot_hold_together_asks_for_help(rules: RuleSet, text: str) -> None:
    assert "urgent.help.breaking" in reasons(rules, text)


def test_keeping_oneself_together_as_advice_is_quiet(rules_without_learned: RuleSet) -> None:
    assert not reasons(rules_without_learned, "自分を保つことが大事だと思う")


@pytest.mark.parametrize(
    "text",
    [
        "家に居場所がなく今夜は帰ることができません",
        "大変申し訳ございません。家に居場所がなく、今夜は帰ることができません。",
        "家に居場所がない。今日は帰りたくない",
    ],
)
def test_no_place_at_home_and_not_going_back_tonight_is_acute_need(
    rules: RuleSet, text: str
) -> None:
    assert "urgent.acute_need.home_unsafe" in reasons(rules, text)


def test_feeling_out_of_place_at_home_alone_is_not_a_night_outside(
    rules_without_learned: RuleSet,
) -> None:
    assert not reasons(rules_without_learned, "家に居場所がないと感じることがある")


@pytest.mark.parametrize("text", ["Tôi không còn chỗ nào để đi", "Tôi không có chỗ nào để đi"])
def test_nowhere_left_to_go_in_vietnamese_is_urgent(rules: RuleSet, text: str) -> None:
    assert "urgent.foreign.vi" in reasons(rules, text)


def test_nowhere_to_go_on_a_holiday_in_vietnamese_is_quiet(
    rules_without_learned: RuleSet,
) -> None:
    assert not reasons(rules_without_learned, "Tôi không có chỗ nào để đi du lịch")


# -- group 2: misses of the probe rv11a still open ------------------------------------------


@pytest.mark.parametrize("text", ["ﾓｳｲｷﾀｸﾅｲ", "もういきたくない", "もういきたくない。つかれた"])
def test_no_will_to_live_in_kana_that_reads_as_going_is_suicidal(rules: RuleSet, text: str) -> None:
    # the phrase tier reads kana いきたく as 逝きたい and its ない as a denial; the reading
    # rule, which spells the ない itself, must still be heard
    assert "reading.suicidal.round3" in reasons(rules, text)


@pytest.mark.parametrize(
    "text", ["学校にいきたくない", "塾もういきたくない", "しにたくない", "きえたくない"]
)
def test_not_wanting_to_go_to_school_and_denials_in_kana_stay_quiet(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert not reasons(rules_without_learned, text)


@pytest.mark.parametrize("text", ["ごはんない", "家にごはんない"])
def test_no_food_as_all_the_mail_says_is_acute_need(rules: RuleSet, text: str) -> None:
    assert "urgent.short.no_food" in reasons(rules, text)


@pytest.mark.parametrize("text", ["なんにもたべてない", "何も食べてない"])
def test_nothing_eaten_as_all_the_mail_says_is_acute_need(rules: RuleSet, text: str) -> None:
    assert "urgent.short.nothing_eaten" in reasons(rules, text)


@pytest.mark.parametrize(
    "text", ["夜ごはんないから外食する", "何も食べてないのに太った", "ごはんおいしい"]
)
def test_dinner_plans_and_diets_are_not_hunger(rules_without_learned: RuleSet, text: str) -> None:
    assert not reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    "text", ["ネカフェ難民なう。お金あと500円", "野宿なう", "公園で寝とる", "駅で寝とる。帰れん"]
)
def test_sleeping_rough_now_in_slang_or_okayama_is_acute_need(rules: RuleSet, text: str) -> None:
    assert "urgent.acute_need.sleeping_out_now" in reasons(rules, text)


def test_not_being_a_net_cafe_refugee_is_quiet(rules_without_learned: RuleSet) -> None:
    assert not reasons(rules_without_learned, "ネカフェ難民じゃないけど節約中")


@pytest.mark.parametrize(
    "text",
    [
        "おばあちゃんがおらんなった。認知症なんよ",
        "母がいなくなった。朝から探してる",
        "じいちゃんがおらんなって、夜になっても帰ってこん",
    ],
)
def test_a_person_in_ones_care_gone_missing_is_acute_need(rules: RuleSet, text: str) -> None:
    assert "urgent.acute_need.missing_person" in reasons(rules, text)


@pytest.mark.parametrize("text", ["祖母がいなくなって寂しい", "母がいなくなってから一年たちました"])
def test_grief_for_someone_gone_is_not_a_missing_person(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert "urgent.acute_need.missing_person" not in reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    "text", ["生きるんがえれぇ。もうえらいわ", "生きとるんがえらい", "生きるのがえらい"]
)
def test_okayama_living_is_exhausting_is_suicidal(rules: RuleSet, text: str) -> None:
    assert "urgent.suicidal.living_exhausting" in reasons(rules, text)


@pytest.mark.parametrize("text", ["生きてるだけでえらい", "毎日生きてるだけでえらいよ"])
def test_praise_for_getting_through_the_day_is_quiet(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert not reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    "text", ["oyaji ni naguraremashita", "kareshi kara mata nagurareta", "okaasan ni tatakareta"]
)
def test_being_hit_by_family_in_romaji_is_violence(rules: RuleSet, text: str) -> None:
    assert "urgent.violence.romaji" in reasons(rules, text)


@pytest.mark.parametrize("text", ["yakyuu no booru ga atatta", "nagurareru yume wo mita"])
def test_romaji_without_a_family_member_hitting_is_quiet(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert "urgent.violence.romaji" not in reasons(rules_without_learned, text)


# -- group 3: false alarms narrowed, each with the crisis it sits next to ---------------------


@pytest.mark.parametrize(
    "text", ["全財産が尽きるまで旅行したい", "所持金が尽きるまで推しに課金する"]
)
def test_spending_until_the_money_is_gone_by_choice_is_not_acute_need(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert not reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    "text",
    [
        "所持金が尽きた",
        "所持金が尽きるまであと3日しかない",
        "全財産が尽きてしまいました。食べるものもありません",
    ],
)
def test_money_gone_or_about_to_be_stays_acute_need(rules: RuleSet, text: str) -> None:
    assert "urgent.acute_need.money" in reasons(rules, text)


@pytest.mark.parametrize("text", ["停電で電気止まった", "台風で電気止まった", "工事で水道止まる"])
def test_a_supply_cut_by_a_storm_or_works_is_not_poverty(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert not reasons(rules_without_learned, text)


def test_the_electricity_cut_as_all_the_mail_says_stays_urgent(rules: RuleSet) -> None:
    assert "urgent.short.utilities" in reasons(rules, "電気止まった")


@pytest.mark.parametrize("text", ["工作でカッター握るの怖い", "図工でカッター握った"])
def test_a_cutter_in_craft_work_is_a_tool(rules_without_learned: RuleSet, text: str) -> None:
    assert not reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("カッター握っとる", "urgent.short.self_harm.blade"),
        ("カッター握ってる、もう切りたい", "urgent.self_harm.instrument"),
    ],
)
def test_a_blade_in_hand_stays_self_harm(rules: RuleSet, text: str, rule: str) -> None:
    assert rule in reasons(rules, text)


# -- group 4: news and films told in another language are "reported", as in Japanese ---------


@pytest.mark.parametrize(
    "text",
    [
        "I read in the news that a girl was raped",
        "I watched a movie about a boy's suicide",
        "新闻说有个女孩跳楼了",
        "新闻说她被强奸了",
        "Tôi đọc tin tức về một người tự tử",
    ],
)
def test_someone_elses_event_from_the_news_or_a_film_in_another_language_is_reported(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert not reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("I was raped last night", "urgent.foreign.en.sexual"),
        ("I was raped. It was in the news", "urgent.foreign.en.sexual"),
        ("I read in the news about a suicide and now I want to die too", "urgent.foreign.en"),
        ("新闻说有个女孩跳楼了。我也想死", "urgent.foreign.zh"),
        ("我被打了", "urgent.foreign.zh"),
        ("Tôi bị đánh, tôi muốn báo công an", "urgent.foreign.vi"),
    ],
)
def test_the_writers_own_crisis_beside_a_news_word_stays_urgent(
    rules: RuleSet, text: str, rule: str
) -> None:
    assert rule in reasons(rules, text)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        # the writer's own assault in the same sentence as a news or film cue (lead's review)
        (
            "After watching a movie about it I realised my uncle raped me",
            "urgent.foreign.en.sexual",
        ),
        ("My stepfather raped me, it was in the news", "urgent.foreign.en.sexual"),
        (
            "I saw the news about a girl who was raped and then he raped me",
            "urgent.foreign.en.sexual",
        ),
        ("新闻说有个女孩被强奸了，我也被强奸了", "urgent.foreign.zh.sexual"),
        ("Tôi xem tin tức và nhận ra tôi cũng bị hiếp dâm", "urgent.foreign.vi.sexual"),
    ],
)
def test_a_first_person_word_on_the_matchs_side_of_a_news_cue_keeps_it_urgent(
    rules_without_learned: RuleSet, text: str, rule: str
) -> None:
    assert rule in reasons(rules_without_learned, text)


def test_a_foreign_exclusion_without_first_person_words_fails_check(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parent.parent / "rules"
    shutil.copytree(shipped, tmp_path / "rules")
    path = tmp_path / "rules" / "exclusions.toml"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("speaker = ['我'"))
    path.write_text("".join(lines[:at] + lines[at + 1 :]), encoding="utf-8")
    problems = check_rules(tmp_path / "rules")
    assert any(
        "exclusion.reported.foreign_news.zh" in p.message and "speaker" in p.message and p.line
        for p in problems
    )


def test_a_foreign_exclusion_naming_an_unknown_rule_is_reported(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parent.parent / "rules"
    shutil.copytree(shipped, tmp_path / "rules")
    path = tmp_path / "rules" / "exclusions.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace('"urgent.foreign.vi.sexual"]', '"urgent.foreign.vi.sexaul"]', 1),
        encoding="utf-8",
    )
    problems = check_rules(tmp_path / "rules")
    assert any("urgent.foreign.vi.sexaul" in p.message and p.line for p in problems)


# -- noticed on the way: a resolved-past word silenced a few-words rule ----------------------


@pytest.mark.parametrize("text", ["電気止められた", "ガス止められました", "水道止められた"])
def test_a_supply_cut_off_as_all_the_mail_says_is_acute_need(rules: RuleSet, text: str) -> None:
    # 止められた is also the resolved-past rule's やめられた (managed to quit): a word that
    # judges nothing alone must not take the words from the few-words rule
    assert "urgent.short.utilities" in reasons(rules, text)


@pytest.mark.parametrize("text", ["タバコやめられた", "昔は死にたかったけど今は大丈夫"])
def test_quitting_and_a_past_that_is_over_stay_quiet(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert not reasons(rules_without_learned, text)


# -- noticed on the way: the probe's pet handed over for good ---------------------------------


@pytest.mark.parametrize(
    "text",
    ["うちの猫のことよろしくね。もう世話できんけぇ", "犬のことよろしく。もう世話できないから"],
)
def test_a_pet_handed_over_with_no_more_care_is_a_goodbye(rules: RuleSet, text: str) -> None:
    assert "urgent.farewell.goodbye" in reasons(rules, text)


@pytest.mark.parametrize(
    "text", ["旅行の間、猫のことよろしくね", "猫のことよろしく。来週は世話できないから"]
)
def test_a_pet_minded_during_a_trip_is_not_a_goodbye(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert not reasons(rules_without_learned, text)


# -- the lead's differential review (rv13b): this session's exclusions and foreign rules ------


@pytest.mark.parametrize(
    "text",
    [
        # a cue after the match follows the writer's own event
        "被强奸了，看了新闻才敢说出来。",
        "Mk bị cưỡng hiếp, giống như trên báo.",
        # the writer's own wish or event after the cue, without a pronoun
        "被性侵的事上了新闻，现在每天都想自杀。",
        "看了新闻，好想自杀。",
        "看了新闻，才知道自己也被性侵了。",
        "人家看了新闻也想自杀嘛。",
        "Watched a movie about suicide, going to commit suicide tonight.",
        "Saw the news about that school, was raped there too.",
        "Đọc tin tức xong, muốn tự tử quá.",
        "Đọc tin tức về vụ tự tử, tui cũng muốn tự tử.",
        # 电影院 is a cinema, not a film
        "我在电影院被强奸了。",
    ],
)
def test_the_writers_own_event_or_wish_near_a_news_cue_is_not_a_report(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    "text",
    [
        "新闻报道一名男子跳楼身亡。",
        "我看了一个电影，里面的女孩自杀了。",
        "Tôi xem phim về một cô gái bị cưỡng hiếp, rất buồn.",
        "I watched a film about a boy's suicide and cried.",
    ],
)
def test_a_report_read_or_watched_by_the_writer_stays_discounted(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert not reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    "text",
    ["授業中にカッター握ってる", "技術の授業中カッター握っとる", "段ボールのカッター握ってる"],
)
def test_a_cutter_held_in_class_is_not_craft_work(rules: RuleSet, text: str) -> None:
    assert reasons(rules, text)


def test_spending_it_all_and_then_dying_stays_urgent(rules_without_learned: RuleSet) -> None:
    assert reasons(rules_without_learned, "全財産が尽きるまで使う、そのあと死ぬ")


@pytest.mark.parametrize(
    "text",
    ["運動会は明日決行", "試合は明日決行", "明日決行の花火大会楽しみ", "いよいよ明日決行、体育祭"],
)
def test_an_event_held_as_planned_is_no_plan_of_the_writers(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert "urgent.suicidal.carried_out" not in reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    "text",
    [
        "今夜決行。中止はしない",
        "今夜決行する、雨でも",
        "雨天決行。今夜決行する",
        "試合は中止になった。今夜決行する",
    ],
)
def test_carrying_it_out_tonight_beside_rain_or_a_cancelled_event_stays_urgent(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert "urgent.suicidal.carried_out" in reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    "text",
    [
        "每天晚上被老公打呼噜吵醒。",
        "被爸爸打游戏的声音吵醒了。",
        "我被同事打小报告了",
        "被老板打回来重写报告。",
        "Tôi bị sếp đánh giá thấp.",
        "Em bị người yêu đánh thức lúc nửa đêm.",
    ],
)
def test_snoring_games_and_being_woken_are_not_beatings(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert not reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    "text", ["被他打了一巴掌", "我被爸爸用皮带打了", "Tôi bị chồng đánh mỗi ngày"]
)
def test_a_beating_by_a_named_person_stays_violence(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    "text",
    [
        "お正月は親戚のおじさんの家に行こうと思う",
        "ネットで知り合った友達と大人になったら会おうねって約束した",
        "パスポート取られたらどうしよう、旅行先で盗まれないか心配",
        "会社にパスポートのコピーを取られた",
        "Tôi có thai, công ty cho tôi về nước nghỉ sinh.",
        "我怀孕了，公司让我回国休产假。",
        "雪の中外に出されて雪合戦した",
        "脱出ゲームで監禁された設定だった",
        "誰か助けに来て、引っ越しの荷物多すぎ笑",
        "ゲームのボス強すぎ、誰か助けに来て",
        "मद्दत चाहियो भने भन्नुहोस्",
        "Please pay the invoice by Friday or they will send a reminder.",
    ],
)
def test_family_visits_travel_worries_leave_and_games_are_not_crises(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert not reasons(rules_without_learned, text)


@pytest.mark.parametrize(
    "text",
    [
        "SNSで知り合った大人に会いに来いって言われてる",
        "裏垢で知り合ったおじさんにホテル行こうって言われてる",
        "知らない男に家に来いって言われた",
        "親戚のおじさんにホテル行こうって誘われた",
        "会社にパスポートを取られた",
        "Tôi có thai, công ty bắt tôi về nước.",
        "我怀孕了，公司让我回国。",
        "雪の中外に出された",
        "監禁されてる",
        "誰か今すぐ助けに来て",
        "मद्दत चाहियो",
        "He has my nudes and said send money or he will post them",
    ],
)
def test_the_crises_beside_those_look_alikes_stay_urgent(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert reasons(rules_without_learned, text)
