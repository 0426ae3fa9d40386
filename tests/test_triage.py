"""Behaviour of classify(): what the shipped rules must understand (all mails synthetic)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intake.letter import Letter
from intake.rules import RuleSet
from intake.triage import classify, classify_text, detect_language, triage_report


def urgent(rules: RuleSet, text: str, subject: str = "相談") -> bool:
    return classify_text(subject, text, rules).urgent


@pytest.mark.parametrize(
    "text",
    [
        "もう死にたいです",
        "毎晩死にたくて眠れない",
        "ずっと死にたかった",
        "しにたい",
        "ｼﾆﾀｲ",
        "しにたーい",
        "死にてえ",
    ],
)
def test_inflected_and_variant_spellings_are_urgent(rules: RuleSet, text: str) -> None:
    assert urgent(rules, text)


def test_okayama_negative_han_matches_a_pattern_written_with_nai(rules: RuleSet) -> None:
    t = classify_text("家賃", "今月の家賃が払えんかった", rules)
    assert any(m.pattern == "払えない" and m.surface.startswith("払え") for m in t.matches)
    assert t.topic == "poverty"


def test_ijime_does_not_fire_inside_another_word(rules: RuleSet) -> None:
    # 「ほしいじめん」 contains the letters いじめ but no word いじめ.
    t = classify_text("質問", "ほしいじめんどうな書類はどこで出せますか", rules)
    assert not any(m.topic == "bullying" and "いじめ" in m.pattern for m in t.matches)
    matched = classify_text("", "いじめられてる", rules).matches
    assert any(m.pattern in ("いじめ", "いじめる") for m in matched)


@pytest.mark.parametrize(
    "text",
    [
        "死にたいとかではないです",
        "死にたいとは思っていません",
        "消えたいわけじゃないけど、職場がつらい",
    ],
)
def test_negated_wish_is_not_urgent(rules: RuleSet, text: str) -> None:
    t = classify_text("相談", text, rules)
    assert not t.urgent
    assert any(m.discounted == "negated" for m in t.matches if m.kind == "urgent")


@pytest.mark.parametrize("text", ["死にたいと思わない日はない", "もう死にたいとしか思えない"])
def test_double_negation_and_shika_stay_urgent(rules: RuleSet, text: str) -> None:
    assert urgent(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "昨日は死ぬほど眠かった",
        "熱中症で死ぬかと思った",
        "笑い死ぬかと思ったw",
        "それ殺す気かって笑った",
    ],
)
def test_idioms_are_not_urgent(rules: RuleSet, text: str) -> None:
    assert not urgent(rules, text)


def test_news_about_a_suicide_is_reported_not_urgent(rules: RuleSet) -> None:
    t = classify_text("ニュース", "ニュースで高校生が自殺した事件を見て悲しくなった", rules)
    assert not t.urgent
    assert any(m.discounted == "reported" for m in t.matches)


def test_resolved_past_ideation_is_discounted_but_relapse_is_urgent(rules: RuleSet) -> None:
    resolved = "高校の頃は死にたいと思ってたけど、今は元気です。"
    assert not urgent(rules, resolved)
    assert urgent(rules, resolved + "でも最近またそう思う")
    assert urgent(rules, "昔から死にたいと思ってた")  # past, nothing says it is over


@pytest.mark.parametrize(
    "text",
    [
        "いま屋上にいる",
        "駅のホームの端に立ってる",
        "練炭を買ってきた",
        "病院の薬を飲まずに貯めてる",
        "遺書を書きました",
        "今までありがとう",
        "3日何も食べてない",
        "彼氏に首を絞められた",
        "またリスカしちゃった",
        "腕を切るのがやめられない",
        "もう消えたい",
        "いなくなりたい",
        "楽になりたい",
        "全部終わりにしたい",
        "今夜寝るところがない",
    ],
)
def test_risk_told_as_a_situation_is_urgent(rules: RuleSet, text: str) -> None:
    assert urgent(rules, text)


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("I want to die. Nobody understands me.", "en"),
        ("I haven't eaten in three days and have no money.", "en"),
        ("我不想活了，每天被骂。", "zh"),
        ("Tôi muốn chết. Không ai giúp tôi.", "vi"),
        ("Quero morrer. Não tenho ninguém aqui.", "pt"),
    ],
)
def test_foreign_crisis_is_urgent_with_language_and_topic_other(
    rules: RuleSet, text: str, language: str
) -> None:
    t = classify_text("help", text, rules)
    assert t.urgent and t.language == language and t.topic == "other"


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("Ya no aguanto más. Mi jefe me golpea todos los días.", "urgent.foreign.es"),
        ("Llevo tres días sin comer y no tengo dónde dormir.", "urgent.foreign.es"),
        ("Saya tidak mau hidup lagi. Bos memukul saya setiap hari.", "urgent.foreign.id"),
        ("Ayoko nang mabuhay. Walang makain dito.", "urgent.foreign.tl"),
        ("หนูอยากตาย ไม่มีใครช่วยเลย", "urgent.foreign.th"),
        ("मलाई मर्न मन छ। कसैले बुझ्दैन।", "urgent.foreign.south_asia"),
        ("আমি মরতে চাই। কেউ নেই।", "urgent.foreign.south_asia"),
        ("ខ្ញុំចង់ស្លាប់", "urgent.foreign.km_mn"),
        ("Би үхмээр байна.", "urgent.foreign.km_mn"),
    ],
)
def test_crisis_in_the_languages_of_the_citys_interns_is_urgent(
    rules: RuleSet, text: str, rule: str
) -> None:
    t = classify_text("", text, rules)
    assert t.urgent and t.topic == "other"
    assert rule in {m.rule for m in t.urgent_reasons}


def test_words_written_with_spaces_between_them_still_form_phrases(rules: RuleSet) -> None:
    # わかちがき, as foreign residents learn to write: a space there is a word boundary,
    # and used to end a "sentence", so no phrase of two or more words could match.
    text = "こんにちは。わたし もう つかれた。ともだち に ふく ぜんぶ あげた。"
    t = classify_text("しつもん", text, rules)
    assert t.urgent
    assert "urgent.farewell" in {m.rule for m in t.urgent_reasons}


@pytest.mark.parametrize(
    "text",
    [
        "授業 の あと 先輩 に 殴られた",
        "彼氏 に 殴られた 映画 みたいに 笑ってた 助けて",
        "好きな キャラ の グッズ 買えなかった もう 死にたい",
        "アニメ の シーン で 泣いた でも 本当は 私 が 消えたい",
        "高校 の とき から ずっと 死にたい 親には 落ち着いた って 言われる けど",
        "昔 から ずっと リスカ してる 今 は 平気 な ふり してる",
        "死にたい とか 思わない 日 が ない",
    ],
)
def test_spaces_between_words_do_not_widen_exclusions_or_negation(
    rules: RuleSet, text: str
) -> None:
    # A phrase may cross a space on such a line, but 授業/映画/キャラ/昔/ない in the
    # next space-separated "sentence" must not reach back and discount the crisis.
    assert classify_text("", text, rules).urgent


@pytest.mark.parametrize(
    "text",
    [
        "にほんご すこし わかります しごと つらい อยากตาย",
        "しごと つらい मर्न मन लाग्छ",
    ],
)
def test_a_crisis_word_of_another_script_in_hiragana_mail_is_read(
    rules: RuleSet, text: str
) -> None:
    assert classify_text("", text, rules).urgent


@pytest.mark.parametrize(
    "text",
    [
        "no quiero morir, solo quiero hablar",
        "saya tidak mau mati, hanya capek",
        "ไม่อยากตาย อยากกลับบ้าน",
        "no aguanto más el calor",
        "quiero acabar con todo el trabajo hoy",
        "bos mengancam akan memotong gaji",
        "você me pega na estação amanhã às 8?",
        "Hola, ¿hay clases de japonés gratis los sábados?",
        "Apakah ada acara komunitas Indonesia bulan depan?",
        "สวัสดีค่ะ อยากทราบเวลาเปิดทำการค่ะ",
    ],
)
def test_negated_or_everyday_foreign_wording_is_not_urgent(rules: RuleSet, text: str) -> None:
    assert not classify_text("", text, rules).urgent


def test_foreign_everyday_question_is_not_urgent(rules: RuleSet) -> None:
    t = classify_text(
        "Question", "Hello, do you offer consultations in English on Saturdays?", rules
    )
    assert not t.urgent and t.language == "en"


def test_language_detection_by_script() -> None:
    assert detect_language("今日はありがとう") == "ja"
    assert detect_language("你好，我想咨询") == "zh"


def test_crisis_only_in_the_subject_is_urgent(rules: RuleSet) -> None:
    t = classify_text("遺書書いた", "部活の先輩に無視されていて練習に入れてもらえません。", rules)
    assert t.urgent
    reason = t.urgent_reasons[0]
    assert reason.start < len("遺書書いた")


def test_crisis_buried_in_a_long_mail_is_urgent(rules: RuleSet) -> None:
    filler = "今日はバイトに行って、帰りにコンビニで弁当を買いました。" * 15
    text = filler + "もう薬を全部飲もうかなって考えてます。" + filler
    t = classify_text("長くなります", text, rules)
    assert t.urgent


def test_multi_topic_mail_has_a_primary_and_ranked_secondary(rules: RuleSet) -> None:
    text = (
        "祖母の介護で毎日大変です。認知症で夜も起こされます。家計も苦しくて家賃を滞納しています。"
    )
    t = classify_text("介護と家賃", text, rules)
    assert t.topic == "caregiving"
    ranked = [name for name, _ in t.topics]
    assert ranked[:2] == ["caregiving", "poverty"]
    scores = [score for _, score in t.topics]
    assert scores == sorted(scores, reverse=True)


def test_tied_topics_go_to_other(rules: RuleSet) -> None:
    t = classify_text("", "介護のこと。いじめのこと。", rules)
    assert t.topic == "other"
    assert {name for name, _ in t.topics} >= {"caregiving", "bullying"}


def test_mail_without_topic_words_is_other(rules: RuleSet) -> None:
    assert classify_text("こんにちは", "よろしくお願いします", rules).topic == "other"


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        # one hint word (夜, 友達, 不安) is not a topic: a question about fireworks is not
        # a lonely resident, and the isolation partner is not the desk for it
        ("花火大会っていつですか？友達と行きたいです", "other"),
        ("友達がいなくて夜がつらい", "isolation"),
        # violence at work or school takes its setting's topic (tests/data/README.md)
        ("バイト先の主任に毎日怒鳴られて、今日は首を絞められた", "bullying"),
        ("親方に熱い鉄を押し付けられて、明日も続きをやると言われた", "bullying"),
        # a partner's violence or control goes to the general desk: no partner NPO has it
        ("彼氏に毎日スマホをチェックされて殴られる", "other"),
        ("彼氏と別れて寂しい。夜になると泣いてしまう", "isolation"),
        # distress without another topic is the isolation partner's (tests/data/README.md)
        ("毎日しんどい。特に理由はないけど、誰かと雑談したい", "isolation"),
        # thanking us for a reply is not loneliness
        ("返信ありがとうございました。言われた通り、担任に話してみます", "other"),
        # しね written in kana is 死ね (lemmas._SHINE): being told it at school is bullying
        ("学校で毎日みんなに「しね」って言われる。もう限界", "bullying"),
    ],
)
def test_topic_follows_the_labelling_rules(rules: RuleSet, text: str, topic: str) -> None:
    assert classify_text("", text, rules).topic == topic


def test_urgent_matching_does_not_short_circuit_topics(rules: RuleSet) -> None:
    t = classify_text("いじめ", "クラスでいじめられてる。死にたい", rules)
    assert t.urgent and t.topic == "bullying"


def test_explanation_offsets_point_at_the_surface(rules: RuleSet) -> None:
    subject, text = "ｼﾆﾀｲ", "部活で先輩に殴られた。家賃が払えんし、もう死にたくて"
    t = classify_text(subject, text, rules)
    analysed = subject + "\n" + text
    assert t.matches
    for m in t.matches:
        if m.parts:  # a signal combination: its words lie inside its span
            assert all(words in analysed[m.start : m.end] for _, words in m.parts)
        else:
            assert analysed[m.start : m.end] == m.surface
    surfaces = {m.surface for m in t.urgent_reasons}
    assert "ｼﾆﾀｲ" in surfaces and "死にたく" in surfaces and "殴られ" in surfaces


def test_report_has_the_json_pieces(rules: RuleSet) -> None:
    report = triage_report(classify_text("", "もう死にたい", rules))
    assert report["urgent"] is True
    assert set(report) >= {"topic", "urgent", "matches", "topics", "urgent_reasons", "language"}
    reason = report["urgent_reasons"][0]
    assert set(reason) == {
        "rule",
        "kind",
        "topic",
        "pattern",
        "surface",
        "parts",
        "start",
        "end",
        "discounted",
    }


def test_undecodable_letter_needs_a_human(rules: RuleSet) -> None:
    letter = Letter(subject="", text="", problems=["undecodable body: charset x-unknown"])
    t = classify(letter, rules)
    assert t.needs_human and t.topic == "other"


def test_letter_whose_parse_stopped_half_way_needs_a_human(rules: RuleSet) -> None:
    # intake.parse records parse-error:<Class> and returns what it decoded so far
    letter = Letter(subject="相談", text="", problems=["parse-error:IndexError"])
    assert classify(letter, rules).needs_human


def test_quoted_text_is_never_analysed(rules: RuleSet) -> None:
    letter = Letter(subject="Re: 先日の件", text="ありがとうございました。", quoted="> 死にたい")
    assert not classify(letter, rules).urgent


@pytest.mark.parametrize(
    "text",
    [
        "親父にどつかれて顔が腫れとる",
        "歩道橋の上にいます。下を車が流れていく。全然怖くない。",
        "夜の海に来た。このまま歩いて入っていったら楽かな",
        "生きるのをやめたいです",
        "来世に期待してる",
        "消えちゃいたいなぁ",
        "主治医に希死念慮があると言われた",
        "カッターの刃を腕に当ててしまった",
        "眠剤を全部流し込んだ",
        "薬を飲まずにためてて一か月分になった",
        "ネットでロープを買った",
        "今まで本当にありがとうございました。もう連絡しません。",
        "私がいなくなったら、猫の世話は誰がしてくれるんだろう",
        "介護中の父の首に手をかけそうになった",
        "この子と二人で消えたい",
        "口座の残高が37円です",
        "最後に食べたのが月曜",
        "電気もガスも止められて子どもが寒がってる",
        "大家に今日中に出ていけと言われた",
        "生きてても仕方ない",
        "首をくくろうかと思ってる",
        "ずっと飲まないでとっておいた睡眠薬が二十錠ある",
        "赤ちゃんが泣きやまなくて、壁に投げつけそうになった",
        "3日前から水しか飲んでない",
        "屋上のフェンスの外側に立ってる",
    ],
)
def test_risk_without_the_obvious_words_is_urgent(rules: RuleSet, text: str) -> None:
    assert urgent(rules, text)


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("", "この世界から退場したいと毎晩思う"),
        ("", "生きてるのがだるくてしょうがない"),
        ("", "息をするのも疲れました"),
        ("", "私なんか生まれてきたのが間違いだった"),
        ("", "今夜泊まるとこないです、17歳です"),
        ("", "3日くらい何も食ってない"),
        ("", "電気とガスとまってる"),
        ("", "父が殴るから帰りたくない"),
        ("", "いま鉄橋にいる"),
        ("", "今ダムの上。風つよい"),
        ("", "踏切の手前から動けない"),
        ("", "マンションの10階から下見てる"),
        ("i wanna die", ""),
        ("", "I want 2 die"),
        ("", "もう終わりにする"),
        ("", "咳止め箱ごといった"),
        ("", "何階からなら確実に死ねる？"),
        ("", "もう無理。線路いく"),
        ("", "手首切らないと落ち着かない"),
        ("", "この手紙が届くそのころにはもういないと思う"),
        ("", "泣き止まない赤ちゃんを投げてしまいそう"),
        ("", "寝てる母の顔に枕を押しつけそうになる"),
        ("", "娘にあげるミルクがもうない"),
        ("", "我现在在桥上，雨很大"),
        ("", "tô em cima da ponte. desculpa"),
        ("", "i'm on the bridge right now"),
    ],
)
def test_colloquial_and_short_crisis_wording_is_urgent(
    rules: RuleSet, subject: str, text: str
) -> None:
    """Forms a phone writer uses that the rules missed: colloquial (とこ for ところ, 食って,
    だるい), kana verbs MeCab splits (とまって), a parent named as who hits, a few words
    from a bridge or a dam, chat English (wanna, 2), a whole box of cough pills, a carer
    about to smother or throw, nothing left for a child, "by then I will be gone"."""
    triage = classify_text(subject, text, rules)
    assert triage.urgent, triage.urgent_reasons


@pytest.mark.parametrize(
    "text",
    [
        "息をするのも嫌じゃない",
        "父が殴る場面のある映画を見た",
        "花火を橋の上から見た",
        "今日は屋上でバーベキューの写真を撮りに行く予定なので雨が心配です",
        "今度の日曜にダムを見に行きます",
        "今日は踏切の工事で遅刻した",
        "テスト勉強は何階の自習室が確実に空いてる？",
        "限界まで走って、橋まで行った。部活のトレーニングがきつい",
        "我们在桥上拍照了，风景很好",
        "Ontem fomos tirar fotos na ponte nova",
    ],
)
def test_negated_reported_or_everyday_place_wording_is_not_urgent(
    rules: RuleSet, text: str
) -> None:
    assert not urgent(rules, text)


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("", "しぬ"),
        ("", "死ぬね"),
        ("消", "きえる"),
        ("", "助けて"),
        ("", "もう無理"),
    ],
)
def test_a_mail_of_a_few_crisis_words_is_urgent(rules: RuleSet, subject: str, text: str) -> None:
    triage = classify_text(subject, text, rules)
    assert triage.urgent
    assert all(m.rule.startswith("urgent.short.") for m in triage.urgent_reasons)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("生まれてきてごめんなさい", "urgent.suicidal.wish"),
        ("もう自分を消したい", "urgent.suicidal.wish"),
        ("浪人してまた落ちた。親に合わせる顔がない。死んでわびるしかない", "urgent.suicidal.wish"),
        ("窓から飛ぼうか迷ってる", "urgent.suicidal.means"),
        ("いまから飛ぶ", "urgent.short.death"),
        ("線路の上で寝転んだら電車止まるんかな", "urgent.suicidal.means"),
        ("マンションの何階からなら確実に助からないですか", "urgent.suicidal.means"),
        ("実家の猟銃の鍵の場所を聞いた", "urgent.suicidal.means"),
        ("いきてるのつかれた", "reading.suicidal.wish"),
        ("ほんまに居らんくなろうかな", "reading.suicidal.wish"),
        ("5日くってない", "reading.acute_need.hunger"),
    ],
)
def test_self_erasing_wishes_and_a_jump_from_a_window_are_urgent(
    rules: RuleSet, text: str, rule: str
) -> None:
    assert rule in {m.rule for m in classify_text("", text, rules).urgent_reasons}


@pytest.mark.parametrize(
    "text",
    [
        "死なないよ",
        "死ぬほど眠い",
        "死ぬかと思った",
        "助けてくれてありがとう",
        "もう無理じゃないよ",
        "祖母が死んだ。いい人だった",
        "猫が死んじゃった",
    ],
)
def test_a_few_words_that_negate_or_joke_are_not_urgent(rules: RuleSet, text: str) -> None:
    assert not classify_text("", text, rules).urgent


def test_few_words_rules_do_not_count_in_a_longer_mail(rules: RuleSet) -> None:
    text = "昨日見たホラー映画で、主人公の友達が最初に死ぬ場面がこわかったです"
    triage = classify_text("映画の話", text, rules)
    assert not [m for m in triage.matches if m.rule.startswith("urgent.short.")]
    assert not triage.urgent


@pytest.mark.parametrize(
    ("text", "urgent_expected"),
    [
        ("去年からずっと死にたい。周りには元気そうって言われる", True),  # looking fine
        ("昔は死にたかったけど、今は平気なふりをしてる", True),  # a mask
        ("中学のとき死にたいと思ってたけど、今は大丈夫です", False),  # resolved
    ],
)
def test_looking_fine_is_not_a_resolved_past(
    rules: RuleSet, text: str, urgent_expected: bool
) -> None:
    assert classify_text("", text, rules).urgent is urgent_expected


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("Re: 【笠岡市】メールを受け付けました", "助けて"),
        ("Re: Re: ご相談ありがとうございます", "しぬ"),
        ("", "もう無理もう無理もう無理もう無理もう無理"),
        ("", "助けて😭😭😭😭😭😭😭😭😭😭😭😭😭😭😭😭"),
        ("", "もうしぬ"),
        ("", "母が死んだから私も死ぬ"),
        ("", "友達が死ぬかも"),
    ],
)
def test_few_words_count_what_the_resident_wrote(rules: RuleSet, subject: str, text: str) -> None:
    # a reply's subject, emoji and a repeated run do not make a cry for help "long"
    assert classify_text(subject, text, rules).urgent


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("しぬ。ごめん", "urgent.short.death"),  # MeCab: し(為る) + ぬ(ず) before 。
        ("タヒりたい", "reading.suicidal.wish"),  # タヒ: 死 drawn in katakana
        ("つらい。しぬ。", "urgent.short.death"),
        ("しぬ！", "urgent.short.death"),
        ("シヌ。", "urgent.short.death"),
        ("もう しぬ", "urgent.short.death"),
        ("た す け て", "urgent.short.help"),  # letters spaced one by one
        ("た\u3000す\u3000け\u3000て", "urgent.short.help"),
        ("助 け て", "urgent.short.help"),
        ("し ぬ", "urgent.short.death"),
        ("毎日 つらい です。し に た い と おもう。", "urgent.suicidal.wish"),
    ],
)
def test_kana_and_letter_spaced_cries_for_help_are_urgent(
    rules: RuleSet, text: str, rule: str
) -> None:
    triage = classify_text("", text, rules)
    assert rule in {m.rule for m in triage.urgent_reasons}
    # the evidence quotes the mail as written, spaces and katakana included
    reason = next(m for m in triage.urgent_reasons if m.rule == rule)
    assert reason.surface == ("\n" + text)[reason.start : reason.end]
    assert reason.surface.replace(" ", "").replace("\u3000", "") in {
        "タヒりたい",
        "しぬ",
        "シヌ",
        "たすけて",
        "助けて",
        "しにたい",
    }


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("", "help me"),
        ("相談", "HELP!"),
        ("Re: 【笠岡市】メールを受け付けました", "please help"),
        ("", "救命"),
        ("", "살려줘"),
        ("", "cứu tôi với"),
        ("", "ayúdame por favor"),
        ("", "tulungan mo ako"),
        ("", "ช่วยด้วย"),
        ("", "tasukete"),  # romaji from a phone with a Latin keyboard
    ],
)
def test_help_me_as_all_the_mail_says_is_urgent_in_any_language(
    rules: RuleSet, subject: str, text: str
) -> None:
    triage = classify_text(subject, text, rules)
    assert [m.rule.startswith("urgent.foreign.short.help") for m in triage.urgent_reasons] == [True]


@pytest.mark.parametrize(
    ("text", "urgent_expected"),
    [
        ("not suicidal, promise. mostly homesick and need a friend", False),
        ("I won't kill myself, I just can't sleep", False),
        ("no quiero matarme ni nada, solo estoy cansado", False),
        ("juro que nao quero morrer, so estou cansado", False),
        ("saya ga ada niat bunuh diri, cuma stres kerja", False),
        ("em không muốn chết đâu, chỉ mệt thôi", False),
        ("别担心，我不会自杀的，只是失眠", False),
        ("I have no money, no food since Monday", True),
        ("no sé qué hacer, quiero morir", True),
        ("I'm not okay. I want to die", True),
        ("quero morrer", True),
        ("我想自杀", True),
    ],
)
def test_a_negation_right_before_foreign_crisis_words_discounts_them(
    rules: RuleSet, text: str, urgent_expected: bool
) -> None:
    assert classify_text("", text, rules).urgent is urgent_expected


@pytest.mark.parametrize(
    "text",
    [
        "Can you help me with my visa application form?",
        "I need help finding a part-time job in Kasaoka",
        "我想问一下，能帮帮我找工作吗？我在笠冈市住了三年了",
        "일본어 숙제 좀 도와주세요. 다음 주까지 제출해야 해요",
    ],
)
def test_help_me_in_a_longer_request_is_not_urgent(rules: RuleSet, text: str) -> None:
    assert not classify_text("", text, rules).urgent


@pytest.mark.parametrize(
    "text", ["もういきていけない", "しんじゃおう。", "しんだあとのことばかり考えてる"]
)
def test_soft_wishes_spelled_in_kana_are_urgent(rules: RuleSet, text: str) -> None:
    # MeCab reads these kana differently from their kanji (いき+て+いけ as 行く,
    # しん as 知れる), so the rules spell them out as alternatives
    assert "urgent.suicidal.soft" in {m.rule for m in classify_text("", text, rules).urgent_reasons}


@pytest.mark.parametrize(
    ("text", "urgent_expected"),
    [
        ("もう限界", True),
        ("もうおえん", True),  # Okayama: it is no good any more
        ("もうダメ…", True),
        ("宿題もうだめ", False),
        ("もう限界。誰にも言えない", True),
        ("だれか止めて", True),
        ("寝たまま起きたくないって思う日がある", True),
        ("眠さがもう限界", False),
        ("もう限界〜部活きつすぎ", False),
        ("もう無理、宿題多すぎ", False),
        ("朝起きたくない", False),
    ],
)
def test_at_my_limit_is_urgent_when_it_is_not_about_homework_or_sleepiness(
    rules: RuleSet, text: str, urgent_expected: bool
) -> None:
    assert classify_text("", text, rules).urgent is urgent_expected


@pytest.mark.parametrize(
    "text",
    [
        "死にそう",
        "死んでやる",
        "母が死んだから私も死ぬ",
        # a few-words exclusion (死んだ) must not silence the reading tier
        "介護でもう疲れた。うちが死んだらおえんのんかな",
    ],
)
def test_few_words_report_exclusions_leave_wishes_and_threats_urgent(
    rules: RuleSet, text: str
) -> None:
    assert classify_text("", text, rules).urgent


@pytest.mark.parametrize(
    "text",
    [
        "暑すぎてしぬ。",
        "宿題多すぎてしぬ！",
        "わらいすぎてしぬ",
    ],
)
def test_kana_death_idioms_stay_idioms(rules: RuleSet, text: str) -> None:
    assert not classify_text("", text, rules).urgent


@pytest.mark.parametrize(
    "text",
    [
        "宿題もう無理",
        "暑すぎて死ぬ",
        "スマホの電池消える",
        "データ消える",
        "数学助けて",
        "助けてあげたい",
        "猫が死んじゃった",
        "窓から飛ぶ鳥がきれいだった",
        "祖父の病気は確実に助からないと医者に言われた",
        "あのグループからいなくなろうかな",
        "自分の消しゴムを消したい",
        "橋から飛ぶ鳥を撮影した",
        "今から東京に飛ぶ",
        "猟銃の免許を取った",
        "スマホの充電死んだ",
        "うちの金魚が死んでた",
        "レポートのデータ全部消えた",
        "部活の筋トレで死にそう",
        "腹へって死にそう",
        "推しが尊すぎて死ぬ",
        "帰りの電車で死にかけた",
        "社会のテストたすけて",
    ],
)
def test_everyday_senses_of_crisis_words_are_not_urgent(rules: RuleSet, text: str) -> None:
    assert not classify_text("", text, rules).urgent


def test_short_mail_the_rules_miss_is_caught_by_the_learned_tier(rules: RuleSet) -> None:
    # Ten characters, no rule word: before, mail under 30 characters never reached the
    # learned tier, so it rested on the phrase rules alone.
    triage = classify_text("", "今夜ぜんぶおわらせる", rules)
    assert triage.urgent
    assert [m.rule for m in triage.urgent_reasons] == ["learned.urgent"]


def test_short_mail_must_pass_the_stricter_learned_threshold(rules: RuleSet) -> None:
    from intake.learned import SHORT_THRESHOLD

    text = "花火を橋の上から見た"
    assert rules.learned is not None
    score = rules.learned.probability("", text)
    # the case this guards: above the model's usual bar, below the short-mail one
    assert rules.learned.threshold <= score < SHORT_THRESHOLD
    assert not classify_text("", text, rules).urgent


@pytest.mark.parametrize(
    "text",
    [
        "今月は残高が5万円しかなくて節約中です",
        "祖母の形見の着物を整理しています",
        "海辺の清掃ボランティアに参加したいです",
        "包丁で指を少し切ったけど大丈夫です",
        "橋の上から花火を見た",
        "今までありがとうございました。おかげで就職できました",
    ],
)
def test_everyday_mentions_of_risk_words_are_not_urgent(rules: RuleSet, text: str) -> None:
    assert not urgent(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "I'm tired of everything and don't want to wake up.",
        "Tôi đã không ăn gì 3 ngày rồi.",
        "我好几天没吃饭了。",
        "Não quero mais viver.",
        "I feel like ending my life",
    ],
)
def test_soft_foreign_crisis_wording_is_urgent(rules: RuleSet, text: str) -> None:
    assert urgent(rules, text, subject="help")


def test_window_rule_joins_two_sentences_but_not_three(rules: RuleSet) -> None:
    assert urgent(rules, "マンションの屋上にいる。全然怖くない。")
    calm = "屋上の話。今日は晴れ。天気がいい。お弁当を食べた。怖くない映画を見た。"
    matches = classify_text("", calm, rules).matches
    assert not any(m.rule == "urgent.suicidal.place" for m in matches)


def test_one_clear_topic_signal_is_enough(rules: RuleSet) -> None:
    assert classify_text("部活", "部活の先輩に無視されてます", rules).topic == "bullying"
    assert classify_text("", "休学してから誰とも会ってない", rules).topic == "isolation"


def test_isolation_yields_a_tie_to_the_other_topic(rules: RuleSet) -> None:
    t = classify_text("", "いじめのこと。友達いないこと。", rules)
    assert t.topic == "bullying"
    assert {name for name, _ in t.topics} == {"bullying", "isolation"}


def test_crisis_mail_with_only_loneliness_goes_to_isolation_and_one_word_to_other(
    rules: RuleSet,
) -> None:
    long = "遺書を書きました。渡す相手が思いつかない。返事はいらないです。"
    assert classify_text("", long, rules).topic == "isolation"
    assert classify_text("", "消えたい", rules).topic == "other"
    dv = "夫に殴られて、いまトイレに隠れてこれを打っています"
    assert classify_text("たすけて", dv, rules).topic == "other"


# -- risk signals (rules/signals.toml): concepts combined, not phrases -------------------
@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("カッターで二の腕に線を何本も入れた", "signals.self_harm.act_body"),
        ("ふくらはぎを安全ピンでひっかいてる", "signals.self_harm.act_body"),
        ("咳止めをひと箱ぜんぶ一気に飲んだ", "signals.overdose.pills_quantity_ingest"),
        ("眠剤を飲まずに少しずつ溜め込んでる", "signals.overdose.pills_hoard"),
        ("灯油を買ってきた。もう全部終わらせる", "signals.suicidal.lethal_finality"),
        ("いま防波堤の先にいる。下の波をずっと見てる", "signals.place.edge"),
        ("義父にお湯をかけられて背中が腫れてる", "signals.violence.injury"),
        ("給料日まで所持金ゼロで、一昨日から水しか飲んでない", "signals.deprivation.food_duration"),
    ],
)
def test_signal_combinations_flag_phrasings_no_rule_lists(
    rules: RuleSet, text: str, rule: str
) -> None:
    t = classify_text("相談", text, rules)
    assert t.urgent
    reason = next(m for m in t.urgent_reasons if m.rule == rule)
    assert len(reason.parts) >= 2  # the concepts and the words that combined
    assert all(words for _, words in reason.parts)


@pytest.mark.parametrize(
    "text",
    [
        "手首のサポーターを買いました",  # a body part alone
        "昨日は髪を切ってすっきりした",  # an act and relief, not on the body
        "祖母の薬を一週間分まとめてケースに入れるのが大変です。飲み忘れも多いです。",
        "夜に川の土手を散歩するのが好きです。流れの音を聞くと落ち着きます。",
        "明日は胃カメラの検査なので、昨日の夜から何も食べていません。",
        "引っ越し先がペット不可なので、猫を友達に譲りました。",
    ],
)
def test_one_concept_or_an_everyday_reason_is_not_urgent(rules: RuleSet, text: str) -> None:
    assert not urgent(rules, text)


def test_a_negated_act_does_not_combine(rules: RuleSet) -> None:
    assert urgent(rules, "カッターで手首を切った")
    assert not urgent(rules, "手首を切ったりはしていません。ストレスの相談です")


def test_weak_signals_below_the_threshold_stay_in_the_evidence(rules: RuleSet) -> None:
    t = classify_text("相談", "さっき上司に叩かれた。来月のシフトの相談をしたいです。", rules)
    weak = [m for m in t.matches if m.rule == "signals.violence.now"]
    assert weak and weak[0].discounted == "below-threshold"
    assert "signals.violence.now" not in {m.rule for m in t.urgent_reasons}


def test_resolved_past_self_harm_is_discounted_for_signals(rules: RuleSet) -> None:
    text = "高校の頃はカッターで腕を切ってたけど、今は元気です。就職の相談です。"
    assert not urgent(rules, text)
    assert urgent(rules, text + "でも最近また腕を切ってしまう")


@pytest.mark.parametrize(
    "text",
    [
        "My father beats me every night and I am scared to go home.",
        "Binugbog ako ng tatay ko, may dugo sa ulo ko.",
        "Hijo dekhi khana khayeko chaina.",
        "Estou dando minhas coisas. Não vou mais precisar delas.",
    ],
)
def test_foreign_signals_combine_too(rules: RuleSet, text: str) -> None:
    t = classify_text("help", text, rules)
    assert t.urgent
    assert t.topic == "other"


def test_signal_reason_appears_in_the_json_report(rules: RuleSet) -> None:
    report = triage_report(classify_text("", "太ももをカミソリで切った", rules))
    parts = [r["parts"] for r in report["urgent_reasons"] if r["rule"].startswith("signals.")]
    assert parts and {p["concept"] for p in parts[0]} == {"sh_act", "body"}


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("相談", "もう4ぬしかないかも"),  # a digit written for し
        ("相談", "最近ずっと死にたみが強い"),  # slang nominalisation
        ("相談", "毎日じさつのことばかり考えてる"),  # MeCab splits じさつ into じ + さつ
        ("相談", "もう生きてたくない"),  # contracted negative of wanting to live
        ("相談", "介護に疲れた。わしが死んだらおえんのんかな"),  # Okayama dialect question
        ("jisatsu", "学校のことです"),  # romaji only in the subject
        ("tasukete", "部屋から出られない"),  # a subject that is only a cry for help
        ("", "회사가 너무 힘들어요. 죽고 싶어요."),  # Korean
        ("", "သေချင်တယ်"),  # Burmese
    ],
)
def test_blurred_spellings_are_urgent_through_the_reading(
    rules: RuleSet, subject: str, text: str
) -> None:
    assert urgent(rules, text, subject)


@pytest.mark.parametrize(
    "text",
    [
        "じさつしたいとかじゃないです。進路の相談です",  # negated on the reading
        "私に対して冷たい先輩がいる",  # わたしにたいして is not しにたい
        "試しに体験入部してみた",  # ためしにたいけん is not しにたい
        "死ぬ気でバイトを頑張ってる",  # an idiom of effort
        "ニュースでじさつの特集を見た",  # reported
    ],
)
def test_reading_tier_respects_word_boundaries_negation_and_reports(
    rules: RuleSet, text: str
) -> None:
    assert not urgent(rules, text)


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("夜", "死にたみがすごい。誰とも話してない"),
        ("ひま", "さみしくて ふと じさつしよっかなって"),
        ("むり", "弟の世話ばっかり。しにだい。ほんとに"),
    ],
)
def test_a_blurred_stem_right_after_a_sentence_break_is_urgent(
    rules: RuleSet, subject: str, text: str
) -> None:
    """The 。 the reading puts between sentences belongs to the next token; a stem that
    starts right after it (after the subject, or after a space) still starts a word."""
    assert urgent(rules, text, subject)


def test_reading_reason_names_its_rule_and_the_words(rules: RuleSet) -> None:
    t = classify_text("shinitai", "学校のことです", rules)
    (reason,) = t.urgent_reasons
    assert reason.rule.startswith("reading.")
    assert (reason.surface, reason.start, reason.end) == ("shinitai", 0, 8)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("もう決めました。今度の金曜の夜にします。", "signals.plan.resolve_time"),
        ("夜中に痛くない方法を検索してしまう", "signals.research.painless_method"),
        ("ロープってどこで売ってるのかな", "signals.research.where_lethal"),
        ("もう一週間インスリンを打ってない", "signals.treatment.stop_duration"),
        ("祖母の透析にわざと連れて行かなかった", "signals.treatment.stop_deliberate"),
        ("兄に物置に閉じ込められた。スマホも取り上げられた", "signals.confined.cut_off"),
        (
            "ロッカーは空にした。もう心配しないでください。答えは見つかったから",
            "signals.winddown.settled",
        ),
        ("みんなには長い旅に出るって言ってある。犬は友達に預けた", "signals.longtrip.belongings"),
        ("車を山奥に停めてる。窓はまだ開けてある", "signals.car.window_open"),
    ],
)
def test_third_round_situations_are_urgent(rules: RuleSet, text: str, rule: str) -> None:
    t = classify_text("相談", text, rules)
    assert t.urgent
    assert rule in {m.rule for m in t.urgent_reasons}


@pytest.mark.parametrize(
    "text",
    [
        "来月から長い旅に出ます。世界一周です。猫は実家に預けます",
        "もう決めました。引っ越しは土曜の夜にします",
        "受験があるので来月以降のシフトから名前を外してください",
        "楽に痩せる方法をずっと検索してる",
        "友達とキャンプ場に車で来た。ホームセンターで炭を買ってバーベキューした",
        "祖母がインスリンを嫌がって打たない日があって困っています",
    ],
)
def test_benign_versions_of_third_round_situations_are_not_urgent(
    rules: RuleSet, text: str
) -> None:
    assert not urgent(rules, text)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("立体駐車場の最上階。外の手すりにもたれてる", "signals.place.perch"),
        ("届いたものは引き出しにある。開けたら終わり", "signals.means.at_hand_over"),
        ("通帳と印鑑の場所はメモに書いて机の上に置いた", "signals.farewell.affairs_note"),
        ("眠れない母の顔に枕を押し当てそうになった。次はわからない", "signals.carer.smother_urge"),
        (
            "咳止めを一瓶ぜんぶ空にした。さっきから耳鳴りと吐き気がする",
            "signals.overdose.pills_symptom_quantity",
        ),
        (
            "友達には長い旅行に行くと伝えてある。やっと肩の荷が下りた。もう戻らない",
            "signals.leaving.cover_finality",
        ),
    ],
)
def test_fourth_round_situations_are_urgent(rules: RuleSet, text: str, rule: str) -> None:
    t = classify_text("相談", text, rules)
    assert t.urgent
    assert rule in {m.rule for m in t.urgent_reasons}


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("ayuda", "Mi novio me golpea y anoche me encerró en el baño. Tengo miedo."),  # Spanish
        ("tolong", "Majikan saya memukul saya, ada darah di tangan. Saya takut."),  # Indonesian
        ("帮帮我", "他用衣架打我，手臂在流血。我躲在房间里。"),  # Chinese
        ("socorro", "Meu pai me agrediu, tem sangue no meu braço. Estou com medo."),  # Portuguese
        ("tulong", "Binugbog ako ng amo ko. Takot na takot ako."),  # Tagalog
    ],
)
def test_violence_against_the_writer_is_urgent_in_other_languages(
    rules: RuleSet, subject: str, text: str
) -> None:
    t = classify_text(subject, text, rules)
    assert t.urgent
    assert t.topic == "other"


def test_chat_style_mail_spreads_a_combination_over_its_short_lines(rules: RuleSet) -> None:
    """Space-cut hiragana lines are a few words each: confined and cold lie 6 lines apart."""
    text = "いま そうこに とじこめられてる そとから かぎ かけられた みんな わらって いった さむい"
    t = classify_text("たすけて", text, rules)
    assert "signals.confined.cold" in {m.rule for m in t.urgent_reasons}


@pytest.mark.parametrize(
    "text",
    [
        "祖父の薬を一週間分ずつピルケースに小分けしています",  # care work, not an overdose
        "料理中にフライパンで手の甲をやけどした。水ぶくれは潰さない方がいい？",  # a kitchen burn
        "風邪薬を飲んだら眠くなった。バイト中に眠いのはつらい",  # a side effect
        "ペット不可のアパートに引っ越すので、猫を実家に預けます",  # a move
        "注文してたギターの弦が届いた。週末のライブに間に合いそう",  # a parcel
        "港でフォークリフトの仕事をしてる。岸壁の作業は冬が寒い",  # work at a quay
        "死のうとか、そういう気持ちはありません。借金の整理の相談です",  # negation at a distance
        "FPSのチャットで毎試合叩かれる。通報していいレベル？",  # criticism online
    ],
)
def test_benign_versions_of_fourth_round_situations_are_not_urgent(
    rules: RuleSet, text: str
) -> None:
    assert not urgent(rules, text)


def test_hits_at_one_word_come_in_rule_order(rules: RuleSet) -> None:
    """Evidence, and which word a signal combination quotes, must not depend on set
    iteration order (which follows memory addresses and differs between runs)."""
    from intake.lemmas import get_analyser
    from intake.triage import _discount, _find

    subject = "家賃のことと…"
    body = "家賃のことで相談したいです。あと、もう薬を一箱全部飲もうかなって考えてます"
    a = get_analyser().analyse(subject + "\n" + body)
    hits = _find(a, rules)
    _discount(a, hits, rules)
    firsts = [h.first for h in hits]
    assert firsts == sorted(firsts)
    shared = {i for i in firsts if firsts.count(i) > 1}
    assert shared, "the test needs a word where several patterns start"
    for i in shared:
        order = [rules.order[id(h.pattern)] for h in hits if h.first == i]
        assert order == sorted(order)
    assert classify_text(subject, body, rules).urgent


def test_fast_evidence_equals_match() -> None:
    """The hot path's evidence builder makes the same value a ``Match(...)`` call makes."""
    import pickle

    from intake.triage import Match, _evidence

    fields = ("topic.x", "topic", "poverty", "家賃 払えない", "家賃が払えない", 3, 10, "negated")
    fast, slow = _evidence(*fields), Match(*fields)
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert pickle.loads(pickle.dumps(fast)) == slow
    assert fast.parts == ()
    assert repr(fast) == repr(slow)
    assert list(vars(fast).items()) == list(vars(slow).items())  # same fields, same order
    with pytest.raises(AttributeError):
        fast.rule = "other"  # type: ignore[misc]  # still frozen


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="4しぬあ漢Aa 。\\nゖぁゔ", max_size=10))
def test_digit_in_kana_answers_as_the_regex_does(text: str) -> None:
    from intake.triage import _digit_in_kana

    assert _digit_in_kana(text) == (re.search("[ぁ-ゖ]4|4[ぁ-ゖ]", text) is not None)


_SCRIPT_REGEXES = {
    "kana": "[ぁ-ゖァ-ヺｦ-ﾝ]",
    "han": "[\u4e00-\u9fff\u3400-\u4dbf]",
    "hangul": "[\uac00-\ud7af]",
    "latin": "[A-Za-zÀ-ɏḀ-ỿ]",
}


@settings(max_examples=400, deadline=None)
@given(
    st.text(
        alphabet="\u3040ぁゖ\u3097\u30a0ァヺ\u30fbｦﾝ\uff65\uff9e一鿿\u4dff㐀䶿\uabff가힯"
        "\u00bfÀɏ\u0250Ḁỿ@AZ[`az{ 。\n😢\ud800",
        max_size=20,
    )
)
def test_scripts_count_the_letters_the_script_classes_match(text: str) -> None:
    from intake.triage import _Scripts

    counted = _Scripts.of(text)
    for name, klass in _SCRIPT_REGEXES.items():
        assert getattr(counted, name) == len(re.findall(klass, text)), name


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.5, 1.0, 2.0]),
            st.sampled_from(["poverty", "isolation"]),
            st.integers(0, 9),
            st.integers(0, 2),
        ),
        max_size=12,
    )
)
def test_topic_scores_take_the_heaviest_then_earliest_hit_of_overlapping_ones(
    drawn: list[tuple[float, str, int, int]],
) -> None:
    from intake.lemmas import analyse
    from intake.rules import Pattern
    from intake.triage import _Hit, _score

    a = analyse("相談\nお金がなくて家賃が払えないし友達もいないし毎日さみしい")
    hits = [
        _Hit(Pattern(f"t{k}", "topic", topic, "x", (), w, Path("t"), None), f, min(f + s, 10))
        for k, (w, topic, f, s) in enumerate(drawn)
    ]
    hits.sort(key=lambda h: h.first)  # as _find lists them: in token order
    # the definition: heaviest first, then earliest; a hit overlapping a counted one of
    # its topic does not count; subject words weigh 1.5 times
    expected: dict[str, float] = {}
    taken: dict[str, set[int]] = {}
    for h in sorted(hits, key=lambda h: (-h.pattern.weight, h.first)):
        topic = h.pattern.label or "other"
        span = set(range(h.first, h.last + 1))
        if taken.setdefault(topic, set()) & span:
            continue
        taken[topic] |= span
        weight = h.pattern.weight * (1.5 if a.starts[h.first] < 2 else 1.0)
        expected[topic] = expected.get(topic, 0.0) + weight
    assert _score(hits, a, 2, 1.5) == expected


_NEEDLE_TEXT = st.text(alphabet="錠個粒しにたい0123", max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    _NEEDLE_TEXT,
    st.lists(
        st.lists(st.text(alphabet="錠個粒し0123", min_size=1, max_size=3), max_size=3), max_size=3
    ),
)
def test_needle_check_agrees_with_its_any_all_definition(
    text: str, groups: list[list[str]]
) -> None:
    """A concept regex is skipped only when some needle group has no member in the text."""
    from intake.triage import _has_needles

    needles = tuple(tuple(group) for group in groups)
    expected = all(any(s in text for s in group) for group in needles)
    assert _has_needles(text, needles) == expected


def test_concepts_with_japanese_regexes_are_listed_in_rule_order(rules: RuleSet) -> None:
    listed = [c.id for c in rules.concepts_ja]
    assert listed == [c.id for c in rules.concepts.values() if c.regexes_ja]
    assert listed  # the shipped rules have some (e.g. a quantity of pills)


@pytest.mark.parametrize(
    "text",
    [
        "消えたいレベルで恥ずかしい。発表で噛みまくった",  # embarrassment, not a wish
        "期末テスト終わって楽になりたい、あと三日",  # an exam, not a life
        "冬の夜回りでホームレス支援をしています。寝る場所のない人に渡す毛布を集めたい",
        "中学の頃は死にたいと思ってた。今はあの頃の気持ちはもうない",  # resolved past
        "前は毎晩リストカットしてた。今は全然してない",  # resolved past
        "去年は死にたいって毎日思ってた。今は地元で普通に暮らしてる",  # resolved past
    ],
)
def test_idioms_volunteering_and_a_stated_end_are_not_urgent(rules: RuleSet, text: str) -> None:
    assert not urgent(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "消えたいレベルでしんどい",  # the idiom is embarrassment only
        "全部終わって楽になりたい",  # no exam: the wish stands
        "今夜寝る場所がない。外は寒い",  # the writer's own night outside
        "中学の頃は死にたいと思ってた。あの頃の気持ちはもうないと思ってたのに、最近また",
    ],
)
def test_look_alikes_of_those_exclusions_stay_urgent(rules: RuleSet, text: str) -> None:
    assert urgent(rules, text)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("昨日の夜リスカした。止まらない", "urgent.self_harm.split"),  # リ|スカし|た
        ("自分なんて要らない存在なんだって気づいた", "urgent.suicidal.soft"),
        ("眠剤ぜんぶ飲んだ。まぶたが重くなってきた", "signals.overdose.ingest_symptom_quantity"),
        (
            "誰にも言えないけど、もう全部しんどい。ねえ、消えていい？",
            "reading.suicidal.permission",
        ),
        ("徘徊のある認知症の祖母が夕方から帰ってこない", "urgent.acute_need.missing"),
        ("窓の外に足を投げ出して座ってる", "urgent.suicidal.place"),
        ("まどのそとにあしだしてる", "reading.suicidal.legs_out"),
    ],
)
def test_fifth_round_situations_are_urgent(rules: RuleSet, text: str, rule: str) -> None:
    t = classify_text("相談", text, rules)
    assert t.urgent
    assert rule in {m.rule for m in t.urgent_reasons}


@pytest.mark.parametrize(
    "text",
    [
        "高校の頃リスカしてたけど、もう5年以上してない",  # the split form, resolved past
        "要らない服をフリマに出したい",
        "ハードディスクのデータ、消えてもいいやつ？",  # not the sentence's end
        "認知症の祖母の介護認定の手続きを知りたい",
        "窓を開けて外の空気を吸ってる",
    ],
)
def test_benign_versions_of_fifth_round_situations_are_not_urgent(
    rules: RuleSet, text: str
) -> None:
    assert not urgent(rules, text)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("もう嫌だ、あいつらの前で死んだるって本気で思う", "urgent.suicidal.wish"),
        ("今夜死ぬってメッセージが後輩から来た", "urgent.suicidal.wish"),  # a third party
        ("母がいなくなったら、私も後を追うと決めている", "urgent.suicidal.wish"),
        ("いきるのめんどい。ぜんぶ", "urgent.suicidal.wish"),
        ("卒業式の日を命日にするつもり", "urgent.suicidal.clinical"),
        ("叔父の猟銃のカギのありかを知ってる", "urgent.suicidal.means"),
        ("改札を出て踏切の前で立ち尽くしてた", "urgent.suicidal.place"),
        ("ホームで点字ブロックの外側に立ってる", "urgent.suicidal.place"),
        ("トンネルを抜ける電車に体が引っ張られる", "urgent.suicidal.place"),
        ("明日、駅前の歩道橋から飛ぶつもりだ", "urgent.suicidal.place"),
        ("教室の窓から落ちれば楽なのに", "urgent.suicidal.place"),
        ("終わりにします。これ読んだら警察に伝えて", "urgent.farewell.goodbye"),
        ("彼氏にのど元を絞められた", "urgent.violence.concrete"),
        ("熱湯をかけられて腕が痛い", "urgent.violence.concrete"),
        ("ライターで腕をあぶられた", "urgent.violence.concrete"),
        ("父が酔って茶碗を投げつけてくる", "urgent.violence.concrete"),
        ("店長に体で払えって言われた", "urgent.violence.concrete"),
        ("夜中ずっと泣かれて、気づいたら壁の方に投げそうになってた", "urgent.violence.caregiver"),
        ("水で済ませる日が三日続いてる。子どもの分しかない", "signals.deprivation.food_duration"),
        ("he's gonna hurt me when he wakes up", "urgent.foreign.en.need"),
        ("standing here in the dark. one step and it's done", "urgent.foreign.en"),
        ("this is the last message i'll ever send. thank you", "urgent.foreign.en"),
    ],
)
def test_situations_only_the_learned_tier_caught_have_a_rule(
    rules: RuleSet, text: str, rule: str
) -> None:
    t = classify_text("相談", text, rules)
    assert t.urgent
    assert rule in {m.rule for m in t.urgent_reasons}


@pytest.mark.parametrize(
    "text",
    [
        "死んだふりをする虫の動画を見た",
        "先輩の後を追って同じ大学に行きたい",
        "祖父の命日に墓参りに行く",
        "猟銃の免許を取りたい",
        "踏切の近くに住んでる",
        "点字ブロックの上に自転車を置かないで",
        "屋上から花火を見た",
        "読んだら感想ください",
        "カップ麺に熱湯を注いで三分待つ",
        "皿を洗うのが面倒",
        "体で覚えるタイプです",
        "ボールを壁に投げて練習してる",
        "昼は水で済ませてダイエット中",
        "he'll break the record this year",
    ],
)
def test_look_alikes_of_the_learned_tier_situations_are_not_urgent(
    rules: RuleSet, text: str
) -> None:
    assert not urgent(rules, text)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("取り立て屋が来てる。玄関を叩いてる", "signals.threat.violence"),
        ("闇バイトから抜けたい。家族の住所も知られてる", "signals.threat.stalking"),
        ("車に押し込まれた。金を返すまで帰さないって", "signals.threat.violence"),
        ("夜道を運転していて、対向車に突っ込めば楽かなと思った", "urgent.suicidal.place"),
        ("仕事をクビになったら、もう生きていく方法がない", "urgent.suicidal.soft"),
        ("もう朝が来んでほしい", "urgent.suicidal.soft"),  # Okayama 来ん = 来ない
        ("泣きやまない娘に、取り返しのつかないことをしてしまいそう", "urgent.violence.caregiver"),
    ],
)
def test_debt_collectors_abduction_and_soft_wishes_are_urgent(
    rules: RuleSet, text: str, rule: str
) -> None:
    t = classify_text("相談", text, rules)
    assert t.urgent
    assert rule in {m.rule for m in t.urgent_reasons}


@pytest.mark.parametrize(
    "text",
    [
        "借金取りが出てくるドラマを見た",
        "闇バイトの手口についてのニュースを見た",
        "押し入れに布団を押し込んだ",
        "車で壁に突っ込んだらしいけど運転手は無事",
        "この町で生きていく方法を一緒に考えたい",
        "明日は来んでええよって店長に言われた",
        "取り返しのつかないミスをしそうで怖い",
    ],
)
def test_look_alikes_of_debt_collectors_and_soft_wishes_are_not_urgent(
    rules: RuleSet, text: str
) -> None:
    assert not urgent(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "手首のリスカの跡、就活の面接で見られないか心配。もうやってない",
        "腕の傷跡のこと。自分で切ってたけど、今は全然大丈夫",
    ],
)
def test_a_scar_the_writer_says_is_over_is_resolved_past(rules: RuleSet, text: str) -> None:
    assert not urgent(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "リストカットの跡がまた増えた。長袖で隠してる",  # new marks: not over
        "リストカットの跡、もうやってないって親には言った。でも最近また切ってる",  # relapse
    ],
)
def test_a_scar_with_new_marks_or_a_relapse_stays_urgent(rules: RuleSet, text: str) -> None:
    assert urgent(rules, text)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("水道が止まった。ガスも。真っ暗な部屋にいる", "urgent.acute_need.utilities_two"),
        ("とうとう水道まで止められた", "urgent.acute_need.utilities"),
    ],
)
def test_two_utilities_cut_or_the_water_last_is_urgent(
    rules: RuleSet, text: str, rule: str
) -> None:
    t = classify_text("相談", text, rules)
    assert t.urgent
    assert rule in {m.rule for m in t.urgent_reasons}


def test_the_other_utility_named_as_a_tool_is_not_a_second_cut(rules: RuleSet) -> None:
    # one utility cut, the other named only as an appliance the writer copes with
    t = classify_text("相談", "ガスが止まったけど電気ケトルがあるし銭湯もある。来週払う", rules)
    assert "urgent.acute_need.utilities_two" not in {m.rule for m in t.urgent_reasons}


@pytest.mark.parametrize(
    "text",
    ["死にたいなんて思ってないふりをしている", "みんなの前では死にたくないフリをしてる"],
)
def test_pretending_not_to_want_to_die_is_urgent(rules: RuleSet, text: str) -> None:
    """〜ないふり is pretending: the wish is there, not denied (review rv9d)."""
    assert urgent(rules, text)


def test_a_plain_denial_still_discounts(rules: RuleSet) -> None:
    assert not urgent(rules, "死にたくないです。ただ相談したいことがあります。")
