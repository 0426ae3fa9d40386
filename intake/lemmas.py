"""Normalisation and morphological analysis: the one place that talks to fugashi.

Contract: ``analyse(text) -> Analysis`` turns a string into a list of tokens, each with
the keys a rule pattern is matched on (lemma, and the reading of the lemma when the word
is written in kana), its sentence number and its character span *in the original text*.
Rule patterns go through the very same function (``pattern_keys``), so a pattern written
as natural Japanese (``死にたい``) matches every form the analyser maps to the same lemmas
(死にたくて, 死にたかった, しにたい, ｼﾆﾀｲ, しにたーい). This module never decides
anything; it only describes the text.

Why these choices:

* NFKC (only on the characters that need it, so offsets can be mapped back cheaply)
  folds half-width katakana and full-width ASCII; elongation marks and small vowels
  written after hiragana (しにたーい, しにたぃ) are casual spellings and are dropped or
  enlarged; runs of ー/〜 collapse to one.
* Katakana written *instead of* hiragana (シニタイ, ハラエナイ) is analysed as nonsense
  nouns by UniDic, so a katakana run that UniDic does not know as one word is re-read in
  hiragana when that reading yields verbs/adjectives/auxiliaries (and no symbols or
  fillers). Real loanwords (ストレス, リストカット) are kept.
* One ``fugashi.Tagger`` per process (MeCab taggers are not fork-safe to share), and
  the Python side touches MeCab's text output once per line, caching the parsed form of
  each distinct output line: per-node attribute access in fugashi costs ~3x more.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from typing import Any, Literal

import fugashi

logger = logging.getLogger(__name__)

# Lemmas that negate the predicate before them. UniDic gives ない for ない/ん/ねぇ-type
# negation of verbs (払えん -> 払う + ない), 無い for the adjective (ではない), ず/ぬ for
# ません and classical negation. Kansai へん (あらへん, 思わへん) is left out on purpose:
# as a negation it made 死にたいって思わへん? (a question), 〜思わへんわけやない and
# 〜へんかったら read as denials, which the scope rules only know for ない (review rv12b);
# the one crisis it was added for, 泊まるとこあらへん, is a reading rule.
NEGATION_LEMMAS = frozenset({"ない", "無い", "ず", "ぬ"})

NEG_KEY = "<neg>"
VOLITIONAL = "(う)"  # suffix of the keys of a volitional verb form (死のう, 行こう)

_BOUNDARY, _SKIP, _SPECIAL_TOKEN = 1, 2, 3
_POLITE = frozenset({"ます", "です"})
# The sounds of particles and auxiliaries (and of dialect auxiliaries: とる for ている). A
# pattern word written in kanji with one of these readings does not offer the reading as
# a key: 刃 (は), 手 (て), 二 (に), 体 (たい) and 取る (とる) matched every は, て, に, たい
# of a mail and the とる of 打っとる, so 刃 could not be a rule word. Other short readings
# stay (血 for ちがでた, 跡 for あと), and a kana word still matches by its lemma (くび: 首).
# fmt: off
_FUNCTION_READINGS = frozenset("~" + r for r in [
    "は", "が", "を", "に", "へ", "と", "で", "て", "も", "や", "か", "の", "ね", "よ", "な",
    "わ", "ぞ", "ぜ", "さ", "し", "ば", "ら", "り", "る", "た", "だ", "ず", "ぬ", "ん", "う",
    "から", "まで", "より", "けど", "だけ", "ほど", "など", "しか", "こそ", "さえ", "でも",
    "って", "じゃ", "ちゃ", "ない", "たい", "なら", "のに", "ので", "ても", "とる", "てる",
    "とく", "よう", "そう", "らしい", "れる", "せる",
])
# fmt: on
_NEE = frozenset({"ねえ", "ねぇ", "ねー"})
_SENTENCE_END = frozenset("。．.!?！？…‥")

# Characters that need folding. Everything else is passed to MeCab untouched, so the
# common case (plain kanji/kana/ASCII) costs one scan for a character of _SPECIAL_START.
_SPECIAL = re.compile(
    r"(?P<elong>(?<=[ぁ-ゖ])[ー〜～~]+)"  # elongation after hiragana: しにたーい
    r"|(?P<small>(?<=[ぁ-ゖ])[ぁぃぅぇぉ])"  # casual small vowel after hiragana: しにたぃ
    r"|(?P<runs>ー{2,}|[〜～~]{2,})"  # runs of long-vowel / wave marks
    r"|(?P<nfkc>[\uff01-\uff5e\uff61-\uff9f\u2460-\u24ff\u3200-\u33ff\u2160-\u217f]+)"
)
# Every character a _SPECIAL match can start with (its look-behinds consume nothing).
_SPECIAL_START = re.compile(
    r"[ー〜～~ぁぃぅぇぉ\uff01-\uff5e\uff61-\uff9f\u2460-\u24ff\u3200-\u33ff\u2160-\u217f]"
).search
_SMALL_TO_BIG = str.maketrans("ぁぃぅぇぉ", "あいうえお")
_HAS_SPACE = re.compile(r"\s").search
# A space between two Japanese characters; three or more of them, at least one per eight
# characters of the line, is a line written with spaces between words (わかちがき), as
# foreign residents are taught in Japanese class: there a space is a word boundary, not
# the end of a sentence (see Analyser.analyse).
_WORD_SPACE = re.compile(r"(?<=[ぁ-ゖァ-ヺー一-龯々]) (?=[ぁ-ゖァ-ヺー一-龯々])")


# Entries per token cache of the analyser (MeCab key line / UniDic line -> TokenInfo,
# katakana runs): ~0.9 KB an entry, so ~18 MB at most; see Analyser._forget_tokens.
# Rule loading fills ~2,300 and a 2 KB consultation adds a few new words at most.
TOKEN_CACHE_LIMIT = 20_000

# Letters written one by one with spaces (た す け て, し に た い): a way of writing a
# hard word, or of writing on a phone in a hurry.
_JA_LETTER = "ぁ-ゖァ-ヺー一-龯々"
_LETTER_SPACED = re.compile(
    rf"(?<![{_JA_LETTER}])[{_JA_LETTER}](?:[ \u3000]{{1,2}}[{_JA_LETTER}](?![{_JA_LETTER}]))+"
)
_JA_WORD = re.compile(rf"[{_JA_LETTER}]").search


def _close_letter_spacing(line: str) -> tuple[str, list[int]] | None:
    """``line`` with the spaces inside letter-spaced runs removed, and where each of its
    characters was in ``line``; None when the line has no such run.

    MeCab reads た す け て as four unknown letters, so no pattern could match it; closed
    up, it is たすけて. Only runs of single letters close up: in わかちがき (words with
    spaces between them) the spaces stay, they are word boundaries there.
    """
    runs = [
        m
        for m in _LETTER_SPACED.finditer(line)
        # three letters or more (た す け て); two (し ぬ) only as all the line says,
        # because in わかちがき two one-letter words may follow each other (4か め)
        if len(m.group()) >= 5 or not _JA_WORD(line[: m.start()] + line[m.end() :])
    ]
    if not runs:
        return None
    parts: list[str] = []
    index: list[int] = []
    last = 0
    for m in runs:
        parts.append(line[last : m.start()])
        index.extend(range(last, m.start()))
        for k in range(m.start(), m.end()):
            if line[k] not in " \u3000":
                parts.append(line[k])
                index.append(k)
        last = m.end()
    parts.append(line[last:])
    index.extend(range(last, len(line)))
    return "".join(parts), index


_JA_LETTER_AT = re.compile(rf"[{_JA_LETTER}]").match


def _between_letters(line: str, start: int, end: int) -> bool:
    """Is the space ``line[start:end]`` between two Japanese letters?

    Why: a phone writer puts a half-width space between phrases (もう 無理, 睡眠薬 全部
    のんだ, ロープ 買った) where a U+3000 space or none would join them (review rv11a,
    finding 6). The space still ends a sentence for negation, exclusions and signal
    windows; only phrase matching reads across it, as in わかちがき.
    """
    return start > 0 and bool(_JA_LETTER_AT(line, start - 1)) and bool(_JA_LETTER_AT(line, end))


# Characters of an emoji sequence besides the pictographs (So): skin tones (Sk), the
# variation selector (Mn) and the zero-width joiner (Cf).
_EMOJI_PARTS = frozenset({"So", "Sk", "Mn", "Cf"})


def _emoji_inside(line: str, start: int, end: int) -> bool:
    """Is the boundary token ``line[start:end]`` emoji between two Japanese letters?

    Why: an emoji ends a sentence in casual mail, and at a line's end it does; between
    phrases (もう😭無理, 睡眠薬💊全部のんだ) it stands where a space would, so, as for a
    space (_between_letters), phrase matching reads across it while negation does not.
    A run of emoji (もう😭😭無理) is looked across as a whole.
    """
    category = unicodedata.category
    if not line[start:end] or category(line[start]) != "So":
        return False  # 。！？ and the like end a sentence and a phrase
    while start > 0 and category(line[start - 1]) in _EMOJI_PARTS:
        start -= 1
    while end < len(line) and category(line[end]) in _EMOJI_PARTS:
        end += 1
    return _between_letters(line, start, end)


def _spaced_words(line: str) -> bool:
    """Is ``line`` written with a space between words (わかちがき)?"""
    spaces = len(_WORD_SPACE.findall(line))
    return spaces >= 3 and spaces * 8 >= len(line)


_KATAKANA_RUN = re.compile(r"[ァ-ヺ][ァ-ヺー]+")
# しね standing alone, as the word 死ね: 「しね」って言われた, ばか しね, しねしね って声.
# MeCab reads it as 為る + ない (the dialect "won't do"), or as two particles, so the
# bullying and crisis rules written with 死ね never saw it. Only where it cannot be
# something else: after the start of a line, a space, a quote or punctuation (not after
# a word: 楽しいしね and 雨だしね are the particle し + ね, 勉強しねえ is "won't study"),
# and before って, と, よ, a quote, punctuation, a space or the end of the line.
_SHINE = re.compile(
    r"(?:^|(?<=[\s「『\"'(（、。!?…・]))(?:しね)+(?=って|と|よ|[」』\"'!?。、…\s]|$)"
)


# 4 written for し in 死 (4ぬ, 4にたい, 4んで, 4のう, 4ね): MeCab reads a number and
# loose kana, so every rule written with 死ぬ - and its negation, idiom and resolved-past
# judgements - missed the commonest blurred spelling, which only the reading tier saw,
# judging none of them (今夜4ぬ, 4ぬことばかり考える). Read as 死 where nothing else fits:
# not after a digit or a decimal point (14ぬ), and 4に only before たい/たく/たか/そう.
_FOUR_SHI = re.compile(
    r"(?<![0-9０-９.．])4"
    r"(?=ぬ|に(?:たい|たく|たか|そう)|ん(?:で|だ|じゃ)|のう|ね(?:って|[!！?？。、…\s」]|$))"
)


# Okayama 死にとう (= 死にたく: 死にとうなる, 死にとうてたまらん, 死にとうない): MeCab reads
# 死に + と + 唸る / 問う, so no 死にたい rule saw it in a longer mail (only the few-words
# rule caught a short one). 消えとう and 生きとう are read right; only にとう is not.
# Rewritten to たく (one character for one) before the verb-like kana that follow the
# wish (not とうてい, 到底); 死にとうない becomes 死にたくない, which the negation scope
# still reads as a denial.
# Not とうもろこし or 東南 (とうなんアジア) after the purpose form 〜しに (収穫しにとうもろこし
# 畑へ: review rv11b F2).
_SHINI_TOU = re.compile(r"(?<=[死しシ]に)とう(?!もろこし|なん[あア])(?=[なもねぇえ]|て(?!い)|$)")


def _as_shine(m: re.Match[str]) -> str:
    """死ね for each しね of a match (the same length, so offsets hold)."""
    return "死ね" * (len(m.group()) // 2)


def _verb_after(infos: list[TokenInfo], k: int) -> bool:
    """Does a verb or an adjective follow the word at ``k``?

    Why: in the hiragana parse of a katakana run an interjection was taken for noise (a
    loanword MeCab does not know, cut into kana), so イエオイダサレタ (いえ + 追い出す) and
    オヤコロシタイ (おや + 殺す) stayed unread katakana (review rv11a, finding 10). An
    interjection with a verb after it is a stray kana before a real sentence; alone, or
    with only particles after it, it is still noise.
    """
    return any(t.pos.startswith(("動詞", "形容詞")) for t in infos[k + 1 :])


_KANA_ONLY = re.compile(r"[ぁ-ゖァ-ヺー]+")
_KATA_TO_HIRA = str.maketrans({chr(c): chr(c - 0x60) for c in range(ord("ァ"), ord("ヶ") + 1)})


def _negation_info(surface: str) -> TokenInfo:
    return TokenInfo(
        surface, "ない", ("ない", "~ない", NEG_KEY), "~ない", "助動詞", True, False, kana=surface
    )


def to_hiragana(text: str) -> str:
    """Katakana -> hiragana, one character for one (offsets are unchanged)."""
    return text.translate(_KATA_TO_HIRA)


# -- readings (for the reading tier of triage) ------------------------------------------
# UniDic's pronunciation writes long vowels as ー (思う -> オモー, 先生 -> センセー); the
# reading tier wants the kana a writer would type, so ー becomes the vowel a kana writer
# uses there: う after an o-row kana, い after an e-row kana, else the same vowel again.
_ROWS = {
    "あ": "あかさたなはまやらわがざだばぱぁゃゎ",
    "い": "いきしちにひみりぎじぢびぴぃ",
    "う": "うくすつぬふむゆるぐずづぶぷぅゅっ",
    "え": "えけせてねへめれげぜでべぺぇ",
    "お": "おこそとのほもよろをごぞどぼぽぉょ",
}
_VOWEL_OF = {c: v for v, chars in _ROWS.items() for c in chars}
_LONG_AFTER = {"あ": "あ", "い": "い", "う": "う", "え": "い", "お": "う"}

# Hepburn and kunrei romaji, longest first: "shinitai" -> しにたい, "jisatu" -> じさつ.
# fmt: off
_ROMAJI = {
    "kya": "きゃ", "kyu": "きゅ", "kyo": "きょ", "sha": "しゃ", "shu": "しゅ", "sho": "しょ",
    "sya": "しゃ", "syu": "しゅ", "syo": "しょ", "cha": "ちゃ", "chu": "ちゅ", "cho": "ちょ",
    "tya": "ちゃ", "tyu": "ちゅ", "tyo": "ちょ", "nya": "にゃ", "nyu": "にゅ", "nyo": "にょ",
    "hya": "ひゃ", "hyu": "ひゅ", "hyo": "ひょ", "mya": "みゃ", "myu": "みゅ", "myo": "みょ",
    "rya": "りゃ", "ryu": "りゅ", "ryo": "りょ", "gya": "ぎゃ", "gyu": "ぎゅ", "gyo": "ぎょ",
    "bya": "びゃ", "byu": "びゅ", "byo": "びょ", "pya": "ぴゃ", "pyu": "ぴゅ", "pyo": "ぴょ",
    "shi": "し", "chi": "ち", "tsu": "つ", "dzu": "づ",
    "ja": "じゃ", "ju": "じゅ", "jo": "じょ", "ji": "じ", "fu": "ふ",
    "ka": "か", "ki": "き", "ku": "く", "ke": "け", "ko": "こ",
    "sa": "さ", "si": "し", "su": "す", "se": "せ", "so": "そ",
    "ta": "た", "ti": "ち", "tu": "つ", "te": "て", "to": "と",
    "na": "な", "ni": "に", "nu": "ぬ", "ne": "ね", "no": "の",
    "ha": "は", "hi": "ひ", "hu": "ふ", "he": "へ", "ho": "ほ",
    "ma": "ま", "mi": "み", "mu": "む", "me": "め", "mo": "も",
    "ya": "や", "yu": "ゆ", "yo": "よ",
    "ra": "ら", "ri": "り", "ru": "る", "re": "れ", "ro": "ろ",
    "wa": "わ", "wo": "を",
    "ga": "が", "gi": "ぎ", "gu": "ぐ", "ge": "げ", "go": "ご",
    "za": "ざ", "zi": "じ", "zu": "ず", "ze": "ぜ", "zo": "ぞ",
    "da": "だ", "di": "ぢ", "du": "づ", "de": "で", "do": "ど",
    "ba": "ば", "bi": "び", "bu": "ぶ", "be": "べ", "bo": "ぼ",
    "pa": "ぱ", "pi": "ぴ", "pu": "ぷ", "pe": "ぺ", "po": "ぽ",
    "a": "あ", "i": "い", "u": "う", "e": "え", "o": "お",
}
# fmt: on
_ROMAJI_WORD = re.compile(r"[a-z]+")


def romaji_to_hiragana(word: str) -> str | None:
    """Read a Latin word as Japanese romaji, or None when it is not romaji (``help``).

    Why: a writer who cannot type Japanese on a borrowed phone, or who hides the words
    from a shoulder-surfer, writes ``shinitai`` or ``jisatsu`` in the subject; the reading
    tier matches the same kana stems on it as on しにたい.
    """
    word = word.lower()
    if not _ROMAJI_WORD.fullmatch(word):
        return None
    out: list[str] = []
    i, n = 0, len(word)
    while i < n:
        c = word[i]
        if c == "n" and (i + 1 == n or word[i + 1] not in "aiueoy"):
            out.append("ん")
            i += 1
            continue
        if i + 1 < n and c == word[i + 1] and c not in "aiueon":
            out.append("っ")  # double consonant: kitte -> きって
            i += 1
            continue
        for size in (3, 2, 1):
            kana = _ROMAJI.get(word[i : i + size])
            if kana:
                out.append(kana)
                i += size
                break
        else:
            return None
    return "".join(out)


def surface_kana(surface: str, pron: str) -> str:
    """The hiragana a writer would type for ``surface`` (see ``TokenInfo.kana``)."""
    if _KANA_ONLY.fullmatch(surface):
        kana = to_hiragana(surface)
    elif surface.isascii():
        return romaji_to_hiragana(surface) or surface.lower()
    elif pron and pron != surface:
        kana = to_hiragana(pron)
    else:
        return surface
    if "ー" not in kana:
        return kana
    chars: list[str] = []
    for ch in kana:
        if ch == "ー":
            if chars:
                vowel = _VOWEL_OF.get(chars[-1])
                if vowel:
                    chars.append(_LONG_AFTER[vowel])
            continue
        chars.append(ch)
    return "".join(chars)


@dataclass(frozen=True, slots=True, eq=False)
class TokenInfo:
    """What a token *is*, independent of where it occurs (cached per MeCab output line).

    Compared and hashed by identity (``eq=False``): the cache hands out one object per
    distinct MeCab line, so ``set(analysis.infos)`` is a cheap set of the mail's words.
    """

    surface: str
    lemma: str
    keys: tuple[str, ...]  # what patterns are matched on
    reading: str  # "~" + hiragana reading of the lemma ("" when unknown)
    pos: str  # UniDic POS, e.g. "動詞-一般"
    negation: bool  # negates the predicate before it (ない, ず, ...)
    boundary: bool  # ends a sentence (。!? and emoji-like symbols)
    contracted_negative: bool = False  # 払えん: verb and negation in one UniDic token
    volitional: bool = False  # 死のう: UniDic keeps the volitional inside the verb token
    kind: int = 0  # 0 word, _BOUNDARY, _SKIP (、「」, ます/です) or _SPECIAL_TOKEN
    # hiragana reading of the SURFACE as written (kana kept, kanji by pronunciation,
    # romaji converted): what the reading tier of triage matches crisis stems on
    kana: str = ""


@dataclass(slots=True)
class Analysis:
    """Tokens of one text plus the mapping from normalised back to original offsets."""

    text: str  # the original text
    normalised: str
    infos: list[TokenInfo]
    starts: list[int]  # offsets in the NORMALISED text
    ends: list[int]
    sentences: list[int]  # sentence number of each token
    offsets: _OffsetMap
    # The sentence numbers the phrase tier matches in (``triage._find``): the same list
    # as ``sentences`` except on lines written with spaces between words (わかちがき),
    # where a space is a word boundary for a phrase but still ends a sentence for
    # negation, exclusions and signal windows (their reach must not grow with it).
    phrases: list[int] = field(default_factory=list)
    _reading: tuple[str, list[int]] | None = None

    def __post_init__(self) -> None:
        if not self.phrases:
            self.phrases = self.sentences

    def __len__(self) -> int:
        return len(self.infos)

    def reading(self) -> tuple[str, list[int]]:
        """The text as a writer would type it in hiragana, and the token of each character.

        Built from ``TokenInfo.kana`` (kanji by pronunciation, romaji converted), with a
        digit written for a kana (4 for し in 4ぬ/4にたい: a common way to blur a word)
        read as that kana when it stands next to kana, and 。 between sentences. Computed
        once, on demand: only the reading tier of triage needs it.
        """
        if self._reading is not None:
            return self._reading
        parts: list[str] = []
        owner: list[int] = []
        infos, sentences = self.infos, self.sentences
        previous = -1
        last = len(infos) - 1
        for i, info in enumerate(infos):
            sentence = sentences[i]
            if sentence != previous and previous != -1:
                parts.append("。")
                owner.append(i)
            previous = sentence
            kana = info.kana or info.surface
            digit = _DIGIT_KANA.get(kana)
            if digit and (
                (i < last and sentences[i + 1] == sentence and _starts_kana(infos[i + 1]))
                or (i > 0 and sentences[i - 1] == sentence and _ends_kana(infos[i - 1]))
            ):
                kana = digit
            parts.append(kana)
            owner.extend([i] * len(kana))
        self._reading = ("".join(parts), owner)
        return self._reading

    def span(self, first: int, last: int) -> tuple[int, int]:
        """Offsets in the ORIGINAL text of tokens ``first..last`` (inclusive)."""
        segments = self.offsets._segments
        if not segments:  # nothing was folded: offsets are the same
            return self.starts[first], self.ends[last]
        # OffsetMap.start/end inlined: ~70 matched spans a mail are mapped here
        norm_starts = self.offsets._norm_starts
        i = self.starts[first]
        k = bisect_right(norm_starts, i) - 1
        if k >= 0:
            n0, o0, nlen, olen = segments[k]
            # a start inside a replaced run snaps to the run's start
            i = o0 if i < n0 + nlen else o0 + olen + (i - n0 - nlen)
        j = self.ends[last]
        k = bisect_right(norm_starts, j) - 1
        if k >= 0:
            n0, o0, nlen, olen = segments[k]
            # an end inside a replaced run (or at its end) snaps to the run's end
            if j == n0:
                j = o0
            elif j <= n0 + nlen:
                j = o0 + olen
            else:
                j = o0 + olen + (j - n0 - nlen)
        return i, j

    def surface(self, first: int, last: int) -> str:
        """Original text covered by tokens ``first..last`` (inclusive)."""
        start, end = self.span(first, last)
        return self.text[start:end]


class _OffsetMap:
    """Maps an index in the normalised string back to the original string.

    Only replaced runs are recorded, as (normalised start, original start, normalised
    length, original length); between them the two strings advance together.
    """

    __slots__ = ("_norm_starts", "_segments", "exact")

    def __init__(self, segments: list[tuple[int, int, int, int]]):
        self._segments = segments
        self._norm_starts = [s[0] for s in segments]
        # True when the map is the identity: every replaced run is one character for
        # one (！ -> !), so no offset shifts and no offset falls strictly inside a run.
        # Callers may then skip ``Analysis.span`` (most mails with full-width marks).
        self.exact = all(nlen == olen == 1 for _, _, nlen, olen in segments)

    @property
    def segments(self) -> bool:
        """True when some run of the text was replaced (offsets need mapping)."""
        return bool(self._segments)

    def start(self, i: int) -> int:
        return self._map(i, is_end=False)

    def end(self, i: int) -> int:
        return self._map(i, is_end=True)

    def _map(self, i: int, *, is_end: bool) -> int:
        if not self._segments:
            return i
        k = bisect_right(self._norm_starts, i) - 1
        if k < 0:
            return i
        n0, o0, nlen, olen = self._segments[k]
        if i < n0 + nlen or (is_end and i == n0 + nlen):
            # inside a replaced run: snap to its original edges
            if i == n0:
                return o0
            return o0 + olen if is_end or i >= n0 + nlen else o0
        return o0 + olen + (i - n0 - nlen)


_NO_OFFSETS = _OffsetMap([])  # shared: an empty map is never changed


def _special_matches(text: str, pos: int) -> Iterator[re.Match[str]]:
    """``_SPECIAL.finditer(text)`` from ``pos``, trying only at candidate characters."""
    search, match = _SPECIAL_START, _SPECIAL.match
    n = len(text)
    while pos < n:
        candidate = search(text, pos)
        if candidate is None:
            return
        m = match(text, candidate.start())  # look-behind still sees text before pos
        if m is None:
            pos = candidate.start() + 1
            continue
        yield m
        pos = m.end()  # every alternative consumes at least one character


# The last text that needed folding and its result. Why: classify folds each mail twice,
# once to analyse it and once more in the learned tier (``intake.learned.prepare``), and
# the second time is then one string comparison. Both parts of the result are never
# changed after they are made (like ``_NO_OFFSETS``), so sharing them is safe.
_LAST_NORMALISED: tuple[str, tuple[str, _OffsetMap]] = ("", ("", _NO_OFFSETS))


def normalise(text: str) -> tuple[str, _OffsetMap]:
    """Fold width, compatibility characters and casual elongation; keep an offset map."""
    # No match of _SPECIAL can start on a character outside _SPECIAL_START, so jumping
    # from candidate to candidate finds exactly the matches ``finditer`` would, without
    # trying four look-behind alternatives at every character of the mail.
    first = _SPECIAL_START(text)
    if first is None:
        return text, _NO_OFFSETS
    global _LAST_NORMALISED
    last_folded = _LAST_NORMALISED
    if last_folded[0] == text:
        return last_folded[1]
    parts: list[str] = []
    segments: list[tuple[int, int, int, int]] = []
    last = 0
    out_len = 0
    for m in _special_matches(text, first.start()):
        kind = m.lastgroup
        run = m.group()
        if kind == "elong":
            repl = ""
        elif kind == "small":
            repl = run.translate(_SMALL_TO_BIG)
        elif kind == "runs":
            repl = run[0]
        else:
            repl = unicodedata.normalize("NFKC", run)
        parts.append(text[last : m.start()])
        out_len += m.start() - last
        segments.append((out_len, m.start(), len(repl), len(run)))
        parts.append(repl)
        out_len += len(repl)
        last = m.end()
    if not segments:
        return text, _NO_OFFSETS
    parts.append(text[last:])
    folded = "".join(parts), _OffsetMap(segments)
    _LAST_NORMALISED = (text, folded)
    return folded


class Analyser:
    """Wraps the process's one MeCab tagger with the caches that make analysis cheap.

    Why a short output format: half of MeCab's time on a mail goes into writing UniDic's
    text columns (``%f[n]`` splits the feature CSV of every node), and the Python side
    only needs them once per distinct word. So the tagger writes a short *key* line per
    node (surface, left and right context ids, word cost, unknown-word flag), and each
    key maps to a cached ``TokenInfo``. The first time a line holds an unseen key, the
    same tagger parses it again into nodes, and the unseen nodes' features are written
    out exactly as UniDic's own format would print them (``_unidic_line``), so a key
    stands for the very UniDic line the default format prints there. Parsing into nodes
    takes the same Viterbi path as parsing to text (checked on every re-parse).

    Why one tagger: each MeCab tagger maps UniDic's dictionary (~250 MB of files) on its
    own, so a second tagger for the full text format doubled the worker's resident size.

    A key is not unique in the dictionary (合わす/遭わす share surface, ids and cost), but
    MeCab's choice between such twins is: their path costs are equal in every context
    and the strict ``<`` in its Viterbi keeps the one that comes first in the lattice,
    which is the dictionary order. So one key is always printed as one UniDic line.
    ``fast=False`` uses a tagger with UniDic's default text format for everything (the
    reference the tests compare the fast path with).
    """

    def __init__(self, *, fast: bool = True) -> None:
        self._line_cache: dict[str, TokenInfo] = {}
        self._kata_cache: dict[str, bool] = {}
        self._key_cache: dict[str, TokenInfo] = {}
        self._key_parse: Callable[[str], str] | None = None
        # しぬ read as 死ぬ (_kana_death): found on first use, False if the dictionary
        # does not read it so
        self._shinu: TokenInfo | Literal[False] | None = None
        if fast:
            tagger = fugashi.Tagger(_KEY_TAGGER_ARGS)
            probe = "\n".join([*_unidic_lines(tagger, _KEY_PROBE), "EOS"])
            if _key_format_ok(tagger.parse(_KEY_PROBE), probe):
                self._tagger = tagger
                self._key_parse = tagger.parse
                self._full_lines: Callable[[str], list[str]] = partial(_unidic_lines, tagger)
                return
            logger.warning("MeCab ignored the key format; analysing with the full format")
        full = fugashi.Tagger()
        self._tagger = full
        self._full_lines = partial(_printed_lines, full)

    def _forget_tokens(self) -> None:
        """Start the token caches again (between two analyses, never during one).

        Why: every phone number, name and typo is a new MeCab key, so a worker that runs
        for months would keep adding ~0.9 KB a new token (a 200,000-entry cap measured as
        heading for ~175 MB) to its peak. Emptying them when full costs a few hundred
        mails of re-learning the common words; identity of ``TokenInfo`` objects only
        has to hold within one analysis, so this is done at the start of one.
        """
        self._key_cache.clear()
        self._line_cache.clear()
        self._shinu = None  # re-read from the new cache, so it is the same object

    # -- token level -------------------------------------------------------------
    def _info(self, line: str) -> TokenInfo:
        info = self._line_cache.get(line)
        if info is not None:
            return info
        cols = line.split("\t")
        surface = cols[0]
        lform = cols[2] if len(cols) > 2 else ""
        lemma = (cols[3] if len(cols) > 3 else "") or surface
        pos = cols[4] if len(cols) > 4 else ""
        reading = "~" + to_hiragana(lform) if lform else ""
        keys: tuple[str, ...] = (lemma,)
        if "-" in lemma[1:]:
            # UniDic tags some lemmas with a sense (円-助数詞 after a number, 私-代名詞);
            # a pattern written as plain 円 must still match, so the bare word is a key too.
            keys = (lemma, lemma.split("-", 1)[0])
        if reading and _KANA_ONLY.fullmatch(surface):
            # Written in kana: the reading of the lemma is as good a key as the lemma
            # (しぬ for 死ぬ), because the writer did not choose a kanji.
            keys = (*keys, reading)
        negation = (lemma in NEGATION_LEMMAS and pos.startswith(("助動詞", "形容詞"))) or (
            lemma == "んす"  # UniDic reads 払えんし (dialect negative + し) as んす
        )
        if negation:
            # Any negation matches a pattern's negation: 食べてない ~ 食べてません ~ 行くとこない.
            keys = (*keys, NEG_KEY)
        boundary = surface in _SENTENCE_END or (
            pos.startswith("補助記号") and not surface.isascii() and _is_symbolic(surface)
        )
        cform = cols[6] if len(cols) > 6 else ""
        contracted = (
            pos.startswith("動詞")
            and surface.endswith("ん")
            and cform.startswith(("連体形-撥音便", "終止形-撥音便"))
        )
        volitional = cform.startswith("意志推量形")
        if volitional:
            keys = (*keys, *(k + VOLITIONAL for k in keys))
        if boundary:
            kind = _BOUNDARY
        elif pos.startswith("補助記号") or lemma in _POLITE:
            # 、「」 are not words; ます/です only add politeness. Dropping both keeps
            # gaps for words and lets 食べてない match 食べてません.
            kind = _SKIP
        elif contracted or surface in _NEE:
            kind = _SPECIAL_TOKEN
        else:
            kind = 0
        info = TokenInfo(
            surface,
            lemma,
            keys,
            reading,
            pos,
            negation,
            boundary,
            contracted,
            volitional,
            kind,
            surface_kana(surface, cols[1] if len(cols) > 1 else ""),
        )
        if len(self._line_cache) < 2 * TOKEN_CACHE_LIMIT:  # analyse() empties it first
            self._line_cache[line] = info
        return info

    def _katakana_as_hiragana(self, run: str) -> bool:
        """Should this katakana run be read as hiragana? (see module docstring)."""
        decided = self._kata_cache.get(run)
        if decided is not None:
            return decided
        kata = self._parse_alone(run)
        trusted = (len(kata) == 1 and kata[0].lemma != kata[0].surface) or all(
            "-" in t.lemma for t in kata
        )
        decided = False
        if not trusted:
            hira = self._parse_alone(to_hiragana(run))
            content = any(t.pos.startswith(("動詞", "形容詞", "助動詞")) for t in hira)
            noise = any(t.pos.startswith(("記号", "補助記号")) for t in hira) or any(
                t.pos.startswith("感動詞") and not _verb_after(hira, k) for k, t in enumerate(hira)
            )
            decided = content and not noise
        if len(self._kata_cache) >= TOKEN_CACHE_LIMIT:
            self._kata_cache.clear()  # bounded like the token caches (see analyse)
        self._kata_cache[run] = decided
        return decided

    def _split_negative(self, info: TokenInfo) -> tuple[TokenInfo, TokenInfo]:
        verb = TokenInfo(
            info.surface[:-1],
            info.lemma,
            info.keys,
            info.reading,
            info.pos,
            False,
            False,
            kana=info.kana[:-1],
        )
        neg = _negation_info("ん")
        return verb, neg

    def _kana_death(self, infos: list[TokenInfo]) -> list[TokenInfo]:
        """Read し + ぬ at the end of a sentence as しぬ (死ぬ), the way a resident means it.

        Before 。, ！, ？ or the end of a line UniDic prefers the archaic negative 為る + ず
        (しぬ。 = "does not"), so the commonest way a young writer on a phone says it,
        しぬ。ごめん or もうしぬ！, matched no 死ぬ rule while 死ぬ。 did. The archaic
        reading is all but absent from today's mail; where it is meant, the cost is
        that the few-words and idiom rules judge it as 死ぬ. Inside a sentence
        (しぬかも, しぬしかない) MeCab already reads 死ぬ and nothing changes. The
        surfaces together are the one token's surface, so offsets still hold.
        """
        word = self._shinu
        if word is None:
            found = self._parse_alone("しぬ")
            # only if this dictionary reads the word alone as 死ぬ (UniDic does)
            word = found[0] if len(found) == 1 and found[0].lemma == "死ぬ" else False
            self._shinu = word
        if word is False:
            return infos
        out: list[TokenInfo] = []
        i, n = 0, len(infos)
        while i < n:
            info = infos[i]
            if (
                info.surface == "し"
                and info.lemma == "為る"
                and i + 1 < n
                and infos[i + 1].surface == "ぬ"
                and infos[i + 1].lemma == "ず"
                and (i + 2 == n or infos[i + 2].kind in (_BOUNDARY, _SKIP))
            ):
                out.append(word)
                i += 2
                continue
            out.append(info)
            i += 1
        return out

    def _parse_alone(self, text: str) -> list[TokenInfo]:
        return [self._info(x) for x in self._full_lines(text)]

    def _tokens(self, line: str) -> list[TokenInfo]:
        """MeCab's tokens of one line, punctuation and symbols included."""
        parse = self._key_parse
        if parse is None:
            return self._parse_alone(line)
        outs = parse(line).split("\n")
        if outs[-1] == "EOS":
            outs.pop()
        if len(outs) < 2:  # itemgetter of one key answers the value, not a 1-tuple
            infos = list(map(self._key_cache.get, outs))
            if None in infos:
                return self._learn(line, outs)
            return infos  # type: ignore[return-value]  # no None left
        try:
            # every key at once in C (a KeyError for an unseen one); ~30 % cheaper than a
            # .get per key and a search of the answers for None
            return list(itemgetter(*outs)(self._key_cache))
        except KeyError:
            return self._learn(line, outs)

    def _learn(self, line: str, outs: list[str]) -> list[TokenInfo]:
        """Re-parse a line with an unseen key into nodes; remember the unseen keys.

        Only the unseen nodes' features are read (reading them is what costs), the
        known keys keep their cached word.
        """
        nodes = self._tagger.parseToNodeList(line)
        keys = [x for x in outs if x and x != "EOS"]
        if len(keys) != len(nodes) or any(
            k.partition("\t")[0] != node.surface for k, node in zip(keys, nodes, strict=True)
        ):
            # Cannot happen (one tagger, one Viterbi path); if it ever does, the nodes'
            # answer stands and the key lines are no longer used.
            logger.warning("MeCab's key lines disagreed with its nodes; not using them")
            self._key_parse = None
            return [self._info(_unidic_line(node)) for node in nodes]
        cache = self._key_cache
        infos: list[TokenInfo] = []
        for key, node in zip(keys, nodes, strict=True):
            info = cache.get(key)
            if info is None:
                info = self._info(_unidic_line(node))
                if len(cache) < 2 * TOKEN_CACHE_LIMIT:  # analyse() empties it first
                    cache[key] = info
            infos.append(info)
        return infos

    def _hiraganise_runs(self, line: str) -> str:
        runs = _KATAKANA_RUN.findall(line)
        if not runs:
            return line
        decided = list(map(self._kata_cache.get, runs))
        if True not in decided and None not in decided:
            return line  # every run is a known loanword: nothing to rebuild
        return _KATAKANA_RUN.sub(
            lambda m: (
                to_hiragana(m.group()) if self._katakana_as_hiragana(m.group()) else m.group()
            ),
            line,
        )

    # -- text level --------------------------------------------------------------
    def analyse(self, text: str) -> Analysis:
        """Tokenise ``text`` line by line.

        Token offsets are kept in the normalised text (cheap); ``Analysis.span`` maps
        them back to ``text`` only for the tokens that matched something.
        """
        if len(self._key_cache) >= TOKEN_CACHE_LIMIT or len(self._line_cache) >= TOKEN_CACHE_LIMIT:
            self._forget_tokens()
        norm, offsets = normalise(text)
        infos: list[TokenInfo] = []
        starts: list[int] = []
        ends: list[int] = []
        sentences: list[int] = []
        sentence = 0
        skips: list[int] = []  # first token after each space that ends no phrase
        tokens_of = self._tokens
        pos = 0
        for line in norm.split("\n"):
            line_start = pos
            pos += len(line) + 1
            if not line or line.isspace():
                continue
            sentence += 1
            has_space = _HAS_SPACE(line)
            # where each character of the line MeCab reads was in ``line`` (None: same)
            index: list[int] | None = None
            if has_space:
                closed = _close_letter_spacing(line)
                if closed is not None:
                    line, index = closed  # タ ス ケ テ: closed up before the katakana test
            line = self._hiraganise_runs(line)  # same length, so offsets still hold
            if "しね" in line:
                line = _SHINE.sub(_as_shine, line)  # same length too
            if "4" in line:
                line = _FOUR_SHI.sub("死", line)  # one character for one
            if "にとう" in line:
                line = _SHINI_TOU.sub("たく", line)  # same length
            line_infos = tokens_of(line)
            if "しぬ" in line:
                line_infos = self._kana_death(line_infos)
            if not has_space:
                # The common case: MeCab's surfaces tile the line exactly, so offsets are
                # running sums and need no search.
                cursor = line_start
                for info in line_infos:
                    found = cursor
                    cursor += len(info.surface)
                    kind = info.kind
                    if kind:
                        if kind == _BOUNDARY:
                            sentence += 1
                            if _emoji_inside(line, found - line_start, cursor - line_start):
                                skips.append(len(infos))  # もう😭無理: not a phrase's end
                        elif kind == _SPECIAL_TOKEN:
                            self._special(info, infos, starts, ends, sentences, sentence, found)
                        continue
                    infos.append(info)
                    starts.append(found)
                    ends.append(cursor)
                    sentences.append(sentence)
                continue
            cursor = 0
            find = line.find
            spaced = _spaced_words(line)
            for info in line_infos:
                surface = info.surface
                found = find(surface, cursor)
                if found != cursor:
                    if found < 0:  # surface changed by MeCab (should not happen): re-sync
                        found = cursor
                    elif line[cursor:found].isspace():
                        sentence += (
                            1  # a space between words ends a "sentence" in unpunctuated mail
                        )
                        if spaced or _between_letters(line, cursor, found):
                            # ... but not a phrase in わかちがき, nor between Japanese
                            # letters (もう 無理, 睡眠薬 全部 のんだ: see _between_letters)
                            skips.append(len(infos))
                cursor = found + len(surface)
                kind = info.kind
                if kind:
                    if kind == _BOUNDARY:
                        sentence += 1
                        if _emoji_inside(line, found, cursor):
                            skips.append(len(infos))
                    elif kind == _SPECIAL_TOKEN:
                        at = found if index is None else index[found]
                        self._special(
                            info, infos, starts, ends, sentences, sentence, line_start + at
                        )
                    continue
                infos.append(info)
                if index is None:
                    starts.append(line_start + found)
                    ends.append(line_start + cursor)
                else:
                    starts.append(line_start + index[found])
                    ends.append(line_start + index[cursor - 1] + 1)
                sentences.append(sentence)
        phrases = sentences
        if skips:
            phrases = []
            k = less = 0
            for i, number in enumerate(sentences):
                while k < len(skips) and skips[k] <= i:
                    less += 1
                    k += 1
                phrases.append(number - less)
        return Analysis(text, norm, infos, starts, ends, sentences, offsets, phrases)

    def _special(
        self,
        info: TokenInfo,
        infos: list[TokenInfo],
        starts: list[int],
        ends: list[int],
        sentences: list[int],
        sentence: int,
        start: int,
    ) -> None:
        """Tokens whose reading depends on what precedes them, or that must be split."""
        end = start + len(info.surface)
        if info.contracted_negative:
            # 払えん is one UniDic token; give patterns the 払う + ない they expect.
            verb, neg = self._split_negative(info)
            infos += (verb, neg)
            starts += (start, end - 1)
            ends += (end - 1, end)
            sentences += (sentence, sentence)
            return
        if infos and (infos[-1].pos.startswith("動詞") or infos[-1].lemma in ("て", "てる")):
            info = _NEE_NEGATION  # 話してねえ: dialect/casual negative UniDic reads as ね
        infos.append(info)
        starts.append(start)
        ends.append(end)
        sentences.append(sentence)

    def pattern_variants(self, pattern: str) -> list[list[list[frozenset[str]]]]:
        """The pattern compiled alone and, if MeCab splits it differently, in a sentence.

        UniDic's segmentation depends on context (嫌がらせ alone is 嫌がら+せ, inside a
        sentence it is one word), so each part is also read inside a carrier phrase and
        kept as an alternative when its word boundaries line up with the part.
        """
        first = self.pattern_keys(pattern)
        variants = [first]
        second: list[list[frozenset[str]]] = []
        for chunk in pattern.split():
            chunk = normalise(chunk)[0]
            carried = self.analyse("その" + chunk + "が")
            toks = [
                _pattern_token(info)
                for info, start, end in zip(
                    carried.infos, carried.starts, carried.ends, strict=True
                )
                if start >= 2 and end <= 2 + len(chunk)
            ]
            covered = [
                (start, end)
                for start, end in zip(carried.starts, carried.ends, strict=True)
                if start >= 2 and end <= 2 + len(chunk)
            ]
            if not toks or covered[0][0] != 2 or covered[-1][1] != 2 + len(chunk):
                return variants
            second.append(toks)
        if second and second != first:
            variants.append(second)
        return variants

    def pattern_keys(self, pattern: str) -> list[list[frozenset[str]]]:
        """Compile a pattern as staff wrote it into segments of token key sets.

        Spaces separate segments: ``家賃 払えない`` lets a few words come between 家賃 and
        払えない; inside a segment the words must be adjacent. A pattern token matches a
        text token when they share a key; pattern tokens always offer their lemma reading
        too, so a kanji pattern matches a kana text word (死ぬ ~ しぬ).
        """
        segments: list[list[frozenset[str]]] = []
        for chunk in pattern.split():
            analysis = self.analyse(chunk)
            toks = [_pattern_token(info) for info in analysis.infos]
            if toks:
                segments.append(toks)
        return segments


def _pattern_token(info: TokenInfo) -> frozenset[str]:
    keys = set(info.keys)
    if info.reading and (
        info.reading not in _FUNCTION_READINGS or _KANA_ONLY.fullmatch(info.surface)
    ):
        keys.add(info.reading)  # not a kanji word read like a particle: _FUNCTION_READINGS
    if info.volitional:
        # A volitional pattern (死のう) must not match every form of the verb.
        keys = {k if k.endswith(VOLITIONAL) else k + VOLITIONAL for k in keys}
    return frozenset(keys)


def _is_symbolic(surface: str) -> bool:
    """Emoji and pictographs end a sentence in casual mail; brackets and 、 do not."""
    return all(unicodedata.category(c) == "So" for c in surface)


_NEE_NEGATION = _negation_info("ねえ")

# Digits that stand for a kana when written inside kana (4ぬ = しぬ, 4ね = しね).
_DIGIT_KANA = {"4": "し"}


def _starts_kana(info: TokenInfo) -> bool:
    return bool(info.surface) and "ぁ" <= info.surface[0] <= "ゖ"


def _ends_kana(info: TokenInfo) -> bool:
    return bool(info.surface) and "ぁ" <= info.surface[-1] <= "ゖ"


# The key tagger's node line: surface, left/right context id, word cost, 1 if unknown.
# Backslashes are doubled because fugashi splits the argument string like a shell.
_KEY_FORMAT = r"%m\\t%phl\\t%phr\\t%c\\t%s\\n"
_KEY_TAGGER_ARGS = (
    f"-O '' --node-format={_KEY_FORMAT} --unk-format={_KEY_FORMAT} --eos-format=EOS\\\\n"
)
_KEY_PROBE = "家賃が払えんかもしれません😢ｶﾞｶﾞ、Help me"


def _key_format_ok(keyed: str, full: str) -> bool:
    """Did this MeCab honour the key format (five columns, same surfaces, EOS last)?"""
    key_lines, full_lines = keyed.split("\n"), full.split("\n")
    return (
        len(key_lines) == len(full_lines)
        and key_lines[-1] == full_lines[-1] == "EOS"
        and all(
            k.count("\t") == 4 and k.partition("\t")[0] == f.partition("\t")[0]
            for k, f in zip(key_lines[:-1], full_lines[:-1], strict=True)
        )
    )


def _feature(value: str | None) -> str:
    """A UniDic feature as ``%f[n]`` prints it: "*" (not applicable) prints as nothing."""
    return "" if value is None or value == "*" else value


def _unidic_line(node: Any) -> str:
    """The line UniDic's default format prints for ``node`` (unidic-lite's ``dicrc``).

    ``node-format-unidic = %m\\t%f[9]\\t%f[6]\\t%f[7]\\t%F-[0,1,2,3]\\t%f[4]\\t%f[5]\\t%f[23]``
    and, for unknown words, ``%m\\t%m\\t%m\\t%m\\t%F-[0,1,2,3]\\t%f[4]\\t%f[5]\\t0``; the
    tests check the two agree with the default tagger's text on every corpus mail.
    """
    f = node.feature
    pos = "-".join([x for x in f[:4] if x != "*"])
    surface = node.surface
    if node.is_unk:
        cells = (surface, surface, surface, surface, pos, _feature(f[4]), _feature(f[5]), "0")
        return "\t".join(cells)
    return "\t".join(
        (
            surface,
            _feature(f[9]),
            _feature(f[6]),
            _feature(f[7]),
            pos,
            _feature(f[4]),
            _feature(f[5]),
            _feature(f[23]),
        )
    )


def _unidic_lines(tagger: Any, text: str) -> list[str]:
    """UniDic's default lines for ``text``, from the nodes of a tagger of any format."""
    return [_unidic_line(node) for node in tagger.parseToNodeList(text)]


def _printed_lines(tagger: Any, text: str) -> list[str]:
    """The lines a tagger with UniDic's default format prints for ``text``."""
    return [x for x in tagger.parse(text).split("\n") if x and x != "EOS"]


_ANALYSER: Analyser | None = None
_ANALYSER_PID: int | None = None


def get_analyser() -> Analyser:
    """The process's one analyser (recreated after fork: MeCab state is per process)."""
    global _ANALYSER, _ANALYSER_PID
    if _ANALYSER is None or os.getpid() != _ANALYSER_PID:
        _ANALYSER = Analyser()
        _ANALYSER_PID = os.getpid()
    return _ANALYSER


def analyse(text: str) -> Analysis:
    """Analyse ``text`` with the process's analyser."""
    return get_analyser().analyse(text)
