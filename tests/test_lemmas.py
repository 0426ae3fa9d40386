"""The analyser's output on tricky inputs, pinned so that speed work cannot change it.

Triage matches rule patterns on what ``intake.lemmas`` says about a text (lemmas, keys,
negation, sentence numbers, offsets back into the original text, the kana reading), so
any change to that description silently changes which mails alert. These tests pin the
description on the inputs where normalisation and MeCab's quirks meet: half-width kana,
full-width ASCII, casual long vowels, dialect negation, emoji, mixed scripts and empty
text.
"""

from __future__ import annotations

import json
from pathlib import Path

import fugashi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intake import lemmas
from intake.lemmas import NEG_KEY, VOLITIONAL, Analyser, Analysis, TokenInfo, analyse, get_analyser

Row = tuple[str, str, tuple[str, ...], int, bool]


def _rows(a: Analysis) -> list[Row]:
    """(original surface, lemma, keys, sentence, negation) of every token."""
    return [
        (a.surface(i, i), info.lemma, info.keys, a.sentences[i], info.negation)
        for i, info in enumerate(a.infos)
    ]


def _lemmas(text: str) -> list[str]:
    return [info.lemma for info in analyse(text).infos]


# -- width and compatibility folding ------------------------------------------------------


def test_half_width_katakana_is_read_as_the_verb_it_spells() -> None:
    a = analyse("ｼﾆﾀｲ")
    assert a.normalised == "シニタイ"
    assert _rows(a) == [
        # both tokens come from one folded run, so each maps back to the whole run
        ("ｼﾆﾀｲ", "死ぬ", ("死ぬ", "~しぬ"), 1, False),
        ("ｼﾆﾀｲ", "たい", ("たい", "~たい"), 1, False),
    ]
    assert a.reading() == ("しにたい", [0, 0, 1, 1])


def test_half_width_katakana_inside_a_word_keeps_its_original_span() -> None:
    a = analyse("ﾊﾞｲﾄ代が足りません")
    assert a.normalised == "バイト代が足りません"
    assert [(s, lemma) for s, lemma, *_ in _rows(a)] == [
        ("ﾊﾞｲﾄ代", "バイト代"),
        ("が", "が"),
        ("足り", "足りる"),
        ("ん", "ず"),
    ]
    assert a.infos[-1].negation


def test_full_width_ascii_is_folded_and_later_offsets_still_map_back() -> None:
    text = "ＡＢＣ１２３で死にたい"
    a = analyse(text)
    assert a.normalised == "ABC123で死にたい"
    assert _rows(a) == [
        ("ＡＢＣ１２３", "ABC", ("ABC",), 1, False),
        ("ＡＢＣ１２３", "123", ("123",), 1, False),
        ("で", "で", ("で", "~で"), 1, False),
        ("死に", "死ぬ", ("死ぬ",), 1, False),
        ("たい", "たい", ("たい", "~たい"), 1, False),
    ]
    assert a.span(3, 4) == (7, 11)
    assert text[7:11] == "死にたい"


def test_full_width_letters_and_ideographic_space() -> None:
    a = analyse("Ｈｅｌｐ\u3000ｍｅ")
    assert a.normalised == "Help\u3000me"
    assert [(s, lemma, sentence) for s, lemma, _, sentence, _ in _rows(a)] == [
        ("Ｈｅｌｐ", "Help", 1),
        ("\u3000", "\u3000", 1),
        ("ｍｅ", "me", 1),
    ]
    assert a.reading()[0] == "help\u3000め"


def test_circled_digits_become_a_number() -> None:
    a = analyse("①②")
    assert a.normalised == "12"
    assert _rows(a) == [("①②", "12", ("12",), 1, False)]


def test_full_width_digits_before_a_counter() -> None:
    a = analyse("１２歳")
    assert a.normalised == "12歳"
    assert [(s, lemma) for s, lemma, *_ in _rows(a)] == [("１２", "12"), ("歳", "歳")]


# -- casual spelling ----------------------------------------------------------------------


def test_long_vowel_run_after_hiragana_is_dropped_but_kept_in_the_surface() -> None:
    a = analyse("しにたーーい")
    assert a.normalised == "しにたい"
    assert _rows(a) == [
        ("しに", "死ぬ", ("死ぬ", "~しぬ"), 1, False),
        ("たーーい", "たい", ("たい", "~たい"), 1, False),
    ]


def test_small_vowel_after_hiragana_is_enlarged() -> None:
    a = analyse("しにたぃ")
    assert a.normalised == "しにたい"
    assert [(s, lemma) for s, lemma, *_ in _rows(a)] == [("しに", "死ぬ"), ("たぃ", "たい")]


def test_wave_dash_run_at_the_end_is_dropped() -> None:
    a = analyse("疲れた〜〜〜")
    assert a.normalised == "疲れた"
    assert _lemmas("疲れた〜〜〜") == ["疲れる", "た"]


def test_long_vowel_after_kanji_and_full_width_bangs() -> None:
    a = analyse("つらすぎてもう無理ー！！")
    assert a.normalised == "つらすぎてもう無理ー!!"
    assert _lemmas("つらすぎてもう無理ー！！") == ["辛い", "過ぎる", "て", "もう", "無理"]
    assert a.reading()[0] == "つらすぎてもうむり"


# -- negation -----------------------------------------------------------------------------


def test_dialect_negative_in_one_token_is_split_into_verb_and_negation() -> None:
    a = analyse("払えん")
    assert _rows(a) == [
        ("払え", "払う", ("払う",), 1, False),
        ("ん", "ない", ("ない", "~ない", NEG_KEY), 1, True),
    ]
    assert a.span(0, 1) == (0, 3)


def test_dialect_negative_inside_a_sentence_keeps_following_offsets() -> None:
    a = analyse("家賃が払えんので")
    assert [(s, lemma, neg) for s, lemma, _, _, neg in _rows(a)] == [
        ("家賃", "家賃", False),
        ("が", "が", False),
        ("払え", "払う", False),
        ("ん", "ない", True),
        ("の", "の", False),
        ("で", "だ", False),
    ]


def test_dialect_negative_followed_by_shi_is_a_negation() -> None:
    a = analyse("家賃払えんし")
    assert _rows(a)[-1] == ("んし", "んす", ("んす", "~んす", NEG_KEY), 1, True)


def test_casual_nee_after_a_verb_is_a_negation() -> None:
    a = analyse("話してねえ")
    assert _rows(a) == [
        ("話し", "話す", ("話す",), 1, False),
        ("て", "て", ("て", "~て"), 1, False),
        ("ねえ", "ない", ("ない", "~ない", NEG_KEY), 1, True),
    ]


def test_polite_masu_is_skipped_so_the_negation_follows_the_verb() -> None:
    a = analyse("食べてません")
    assert _rows(a) == [
        ("食べ", "食べる", ("食べる",), 1, False),
        ("て", "てる", ("てる", "~てる"), 1, False),
        ("ん", "ず", ("ず", "~ず", NEG_KEY), 1, True),
    ]


def test_volitional_form_gets_volitional_keys() -> None:
    (info,) = analyse("死のう").infos
    assert info.volitional
    assert info.keys == ("死ぬ", "死ぬ" + VOLITIONAL)


# -- emoji, sentences and lines -----------------------------------------------------------


def test_emoji_ends_a_sentence_and_is_not_a_token() -> None:
    a = analyse("もう無理😢明日")
    assert _rows(a) == [
        ("もう", "もう", ("もう", "~もう"), 1, False),
        ("無理", "無理", ("無理",), 1, False),
        ("明日", "明日", ("明日",), 2, False),
    ]
    assert a.reading() == ("もうむり。あす", [0, 0, 1, 1, 2, 2, 2])


def test_emoji_only_text_has_no_tokens() -> None:
    assert len(analyse("😢😢")) == 0


def test_each_line_is_a_new_sentence_with_offsets_across_lines() -> None:
    a = analyse("円\n私")
    assert _rows(a) == [
        ("円", "円", ("円",), 1, False),
        ("私", "私-代名詞", ("私-代名詞", "私"), 2, False),
    ]
    assert a.span(1, 1) == (2, 3)


def test_spaces_between_words_end_a_sentence_in_unpunctuated_mail() -> None:
    a = analyse("Help me 死にたい")
    assert [(s, sentence) for s, _, _, sentence, _ in _rows(a)] == [
        ("Help", 1),
        ("me", 2),
        ("死に", 3),
        ("たい", 3),
    ]
    assert a.reading()[0] == "help。め。しにたい"


# -- mixed scripts ------------------------------------------------------------------------


def test_loanwords_in_katakana_keep_their_sense_and_bare_keys() -> None:
    a = analyse("バイトのシフト")
    assert [info.keys for info in a.infos] == [
        ("バイト-Arbeit", "バイト", "~ばいと"),
        ("の", "~の"),
        ("シフト-shift", "シフト", "~しふと"),
    ]
    assert _lemmas("ストレス") == ["ストレス-stress"]


def test_katakana_written_instead_of_hiragana_is_reread() -> None:
    assert _rows(analyse("ハラエナイ")) == [
        ("ハラエ", "払う", ("払う", "~はらう"), 1, False),
        ("ナイ", "ない", ("ない", "~ない", NEG_KEY), 1, True),
    ]
    assert _lemmas("シニタイ") == ["死ぬ", "たい"]


def test_romaji_and_digit_for_kana_in_the_reading() -> None:
    (info,) = analyse("shinitai").infos
    assert info.kana == "しにたい"
    assert analyse("4ぬ").reading()[0] == "しぬ"


# -- empty input --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   \n\n", "\n"])
def test_empty_or_blank_text_has_no_tokens(text: str) -> None:
    a = analyse(text)
    assert (a.infos, a.starts, a.ends, a.sentences) == ([], [], [], [])
    assert a.normalised == text
    assert a.reading() == ("", [])


# -- patterns -----------------------------------------------------------------------------


def test_pattern_keys_split_on_spaces_and_offer_readings() -> None:
    assert get_analyser().pattern_keys("家賃 払えない") == [
        [frozenset({"家賃", "~やちん"})],
        [frozenset({"払う", "~はらう"}), frozenset({"ない", "~ない", NEG_KEY})],
    ]


def test_pattern_read_in_a_carrier_phrase_is_an_alternative() -> None:
    assert get_analyser().pattern_variants("嫌がらせ") == [
        [[frozenset({"嫌", "~いや"}), frozenset({"がる", "~がる"}), frozenset({"せる", "~せる"})]],
        [[frozenset({"嫌がらせ", "~いやがらせ"})]],
    ]


# -- the key tagger (fast path) against the full tagger (reference) -----------------------
# The fast path reads MeCab's cheap per-node keys and looks the words up in a cache filled
# from the full UniDic output; these tests hold it to the full output on every input.

DATA = Path(__file__).parent / "data"


def _word(info: TokenInfo) -> tuple[object, ...]:
    return (
        info.surface,
        info.lemma,
        info.keys,
        info.reading,
        info.pos,
        info.negation,
        info.boundary,
        info.contracted_negative,
        info.volitional,
        info.kind,
        info.kana,
    )


def _description(a: Analysis) -> tuple[object, ...]:
    return (
        a.normalised,
        [_word(info) for info in a.infos],
        a.starts,
        a.ends,
        a.sentences,
        [a.span(i, i) for i in range(len(a))],
        a.reading(),
    )


@pytest.fixture(scope="module")
def fast() -> Analyser:
    analyser = Analyser()
    assert analyser._key_parse is not None, "the key tagger was rejected at start-up"
    return analyser


@pytest.fixture(scope="module")
def reference() -> Analyser:
    return Analyser(fast=False)


TRICKY = [
    "ｼﾆﾀｲ",
    "ＡＢＣ１２３で死にたい",
    "しにたーーい。もう無理〜〜😢明日",
    "家賃が払えんので、バイト増やしたけど払えん",
    "話してねえ\nHelp me 死にたい\n\n①②",
    # homographs that share surface, context ids and cost in UniDic: MeCab must print
    # one of each pair, always the same one
    "ひどい目にあわす。手をあわす。",
    "顔をあわすのがこわい",
    "あわすことができない",
    "先生の前でい縮してしまう",
    "うすら寒い朝、うそ寒い夜",
    "あせぼができた",
]


def _corpus() -> list[str]:
    texts = list(TRICKY)
    path = DATA / "triage_dev.jsonl"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                mail = json.loads(line)
                texts.append(mail.get("subject", "") + "\n" + mail.get("text", ""))
    return texts


def test_fast_path_describes_every_corpus_mail_like_the_full_tagger(
    fast: Analyser, reference: Analyser
) -> None:
    texts = _corpus()
    for _ in range(2):  # first with cold key caches, then warm
        for text in texts:
            assert _description(fast.analyse(text)) == _description(reference.analyse(text)), text


def test_a_cached_word_is_one_object_across_mails(fast: Analyser) -> None:
    first = fast.analyse("家賃が払えない")
    second = fast.analyse("来月も家賃が払えない")
    assert first.infos[0] is second.infos[2]  # 家賃: a set of infos is a set of words


_PIECES = st.sampled_from(
    [
        *"あいうえおしにたーぃぅ〜～~ｱｼﾆﾀｲﾞﾟＡＢＣ１２３！？。、「」…😢①ⅡabcXY4 \u3000\n\t",
        "払えん",
        "話してねえ",
        "死のう",
        "ハラエナイ",
        "shinitai",
        "4にたい",
        "家賃",
        "いじめられてる",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_PIECES, max_size=30).map("".join))
def test_fast_path_describes_any_text_like_the_full_tagger(text: str) -> None:
    assert _description(_FAST.analyse(text)) == _description(_REFERENCE.analyse(text))


# Module-level analysers for the hypothesis test (fixtures do not mix with @given).
_FAST = Analyser()
_REFERENCE = Analyser(fast=False)


def test_node_lines_equal_what_the_default_unidic_format_prints(reference: Analyser) -> None:
    """The fast path learns unseen words from MeCab's nodes, written out as UniDic's own
    format would print them; any drift (a feature column, "*" handling, unknown words)
    would give a learned word other keys than the reference analyser gives it."""
    tagger = fugashi.Tagger(lemmas._KEY_TAGGER_ARGS)
    lines = [line for text in _corpus() for line in text.split("\n") if line]
    lines += ['「うるせえ」、って。,Ａ１ ｶﾞｶﾞ ①②Ⅱ㈱ "quoted" a,b 😢']
    assert len(lines) > 200
    for line in lines:
        assert lemmas._unidic_lines(tagger, line) == lemmas._printed_lines(
            reference._tagger, line
        ), line


def test_the_fast_analyser_opens_one_tagger(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each MeCab tagger maps UniDic's dictionary on its own (~250 MB of files)."""
    opened: list[str] = []
    real = fugashi.Tagger

    def counting(*args: str) -> fugashi.Tagger:
        opened.append(args[0] if args else "")
        return real(*args)

    monkeypatch.setattr(lemmas.fugashi, "Tagger", counting)
    analyser = Analyser()
    assert analyser.analyse("家賃が払えん。ｼﾆﾀｲ").infos  # learning and katakana re-reads too
    assert len(opened) == 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="しにたーいぃ〜～ｼﾆﾀｲ！１①㈱あ漢 \n", min_size=1, max_size=16))
def test_span_maps_token_offsets_as_the_offset_map_does(text: str) -> None:
    a = analyse(text)
    for first in range(len(a)):
        for last in range(first, len(a)):
            expected = (a.offsets.start(a.starts[first]), a.offsets.end(a.ends[last]))
            assert a.span(first, last) == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="しにたーいぃ〜～ｼﾆﾀｲ！？１①㈱あ漢A \n", min_size=1, max_size=16))
def test_an_exact_offset_map_maps_every_offset_to_itself(text: str) -> None:
    """``exact`` lets classify skip ``span``: it must only be set when the map is identity."""
    a = analyse(text)
    if a.offsets.exact:
        assert len(a.normalised) == len(text)
        for i in range(len(a.normalised) + 1):
            assert (a.offsets.start(i), a.offsets.end(i)) == (i, i)
    else:
        # something changed length, or a run of several characters was folded (snapping)
        assert any(nlen != 1 or olen != 1 for _, _, nlen, olen in a.offsets._segments)


def test_one_for_one_folding_keeps_the_offset_map_exact() -> None:
    assert analyse("つらい！もう無理？").offsets.exact  # ！ -> ! one for one
    assert analyse("つらい").offsets.exact  # nothing folded
    assert not analyse("ｼﾆﾀｲ").offsets.exact  # one run of four half-width characters
    assert not analyse("しにたーい").offsets.exact  # the elongation mark is dropped
    assert not analyse("１２月").offsets.exact  # a two-character run snaps inside it


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="しにたーいぃ〜ｼﾆﾀｲ！１あ漢 \n", max_size=12),
    st.text(alphabet="しにたーいぃ〜ｼﾆﾀｲ！１あ漢 \n", max_size=12),
)
def test_normalise_remembers_only_the_very_same_text(first: str, second: str) -> None:
    """The one-entry memo (the learned tier folds each mail again) never answers for
    another text: folding ``second`` right after ``first`` gives what a cold call gives.
    """
    lemmas._LAST_NORMALISED = ("", ("", lemmas._NO_OFFSETS))
    cold, cold_map = lemmas.normalise(second)
    lemmas.normalise(first)
    warm, warm_map = lemmas.normalise(second)
    assert warm == cold
    assert warm_map._segments == cold_map._segments and warm_map.exact == cold_map.exact


def test_spaced_words_are_told_from_pauses() -> None:
    from intake.lemmas import _spaced_words

    assert _spaced_words("にほん に きて 一ねん です")
    assert not _spaced_words("疲れた ほんとに もう")  # two pauses in a short line
    assert not _spaced_words("I want to talk to someone")  # Latin words are not Japanese


@pytest.mark.parametrize(
    ("text", "surfaces"),
    [
        ("た す け て", ["た す け", "て"]),
        ("し ぬ", ["し ぬ"]),
        # わかちがき: two one-letter words inside a spaced line keep their space
        ("ごはん たべない 4か め", ["ごはん", "たべ", "ない", "4", "か", "め"]),
    ],
)
def test_letter_spaced_runs_are_read_closed_up(text: str, surfaces: list[str]) -> None:
    a = analyse(text)
    assert [text[s:e] for s, e in zip(a.starts, a.ends, strict=True)] == surfaces


@pytest.mark.parametrize("text", ["しぬ。", "しぬ！", "もうしぬ", "しぬ、ごめん", "しぬかも"])
def test_kana_shinu_at_a_sentence_end_is_the_verb_to_die(text: str) -> None:
    assert "死ぬ" in [i.lemma for i in analyse(text).infos]


@pytest.mark.parametrize(
    "text", ["しねって言われた", "『しね』と書かれた", "ばか しね いわれる", "しね", "しねしね！"]
)
def test_kana_shine_standing_alone_is_the_word_die(text: str) -> None:
    a = analyse(text)
    assert "死ぬ" in [i.lemma for i in a.infos]
    # offsets still point at the kana the resident wrote
    assert "しね" in [text[s:e] for s, e in zip(a.starts, a.ends, strict=True)]


@pytest.mark.parametrize("text", ["楽しいしね", "雨だしね。", "今日は行かないしね", "勉強しねえと"])
def test_kana_shine_after_a_word_is_not_the_word_die(text: str) -> None:
    assert "死ぬ" not in [i.lemma for i in analyse(text).infos]


def test_token_caches_start_again_when_full_and_analysis_stays_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that runs for months meets a new name or number in every mail; the token
    caches are emptied when full (between analyses) instead of growing without bound."""
    analyser = Analyser()
    reference = [(i.surface, i.lemma) for i in analyser.analyse("しぬ。山田花子です").infos]
    monkeypatch.setattr(lemmas, "TOKEN_CACHE_LIMIT", 50)
    for n in range(200):
        analyser.analyse(f"電話は090{n:08d}です。{n}円")
        assert len(analyser._key_cache) < 2 * 50 and len(analyser._line_cache) < 2 * 50
    assert [(i.surface, i.lemma) for i in analyser.analyse("しぬ。山田花子です").infos] == reference
