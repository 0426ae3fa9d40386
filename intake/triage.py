"""Triage: ``classify(letter, rules) -> Triage``, a small interpreter over ``rules/*.toml``.

Input: a parsed ``Letter`` (only ``subject`` and ``text`` - the resident's new words - are
analysed; quoted text never is) and a compiled ``RuleSet``. Output: a ``Triage`` with the
primary topic (which decides the owning partner), ranked secondary topics, the urgent flag
and every piece of evidence: each match names its rule, pattern, the words in the mail and
their offsets, and - when it did not count - why (negated, idiom, reported,
resolved-past). It never routes, stores, sends or logs the mail's words.

The loop, in order (urgent checks never short-circuit topic matching):

1. analyse ``subject + "\\n" + text`` once (``intake.lemmas``);
2. find every pattern of every kind in one pass over the tokens;
3. discount matches: negated predicates (an odd number of negations right after the
   match: 死にたいとかではない, but not 死にたいと思わない日はない), idioms overlapping
   the match (死ぬほど眠い), news/fiction in the same sentence for "reportable" urgent
   rules, and past ideation that the writer says is resolved (and not back);
4. risk signals (``rules/signals.toml``): the words of warning-sign *concepts* (a
   self-harm act, a body part, a means, a quantity, a place, finality...) that still
   count after the same discounts are grouped by sentence; every *combination* of
   concepts found within its window (act + body part in one sentence, means + quantity
   in two adjacent ones, anything in a short mail) adds its score, and a mail whose
   score reaches the threshold is urgent with one reason per combination, naming the
   concepts and the words that combined. This tier generalises where phrase lists do
   not: 「カッターで二の腕に線を」 and 「太ももを切った」 are one combination;
5. urgent = any urgent match or signal combination that counts, or a foreign crisis regex;
6. topic scores = sum of counted topic weights (subject words weigh more); the best
   topic wins only with a clear lead and enough score, otherwise "other".

When in doubt the rules are written to flag urgent: a missed crisis costs more than an
on-call call that turns out not to be needed.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from intake.lemmas import Analysis, TokenInfo, get_analyser
from intake.rules import ASCII_LOOKALIKES, CRISIS_EMOJI, Pattern

if TYPE_CHECKING:
    from intake.letter import Letter
    from intake.rules import Combination, ForeignExclusion, RuleSet, Shape

TOPICS = ("bullying", "poverty", "caregiving", "isolation", "volunteer", "other")


@dataclass(frozen=True)
class Match:
    """One piece of evidence: which rule matched which words, where, and whether it counted."""

    rule: str  # rule id, e.g. "urgent.suicidal.shinitai"
    kind: str  # "topic" | "urgent" | "exclusion"
    topic: str | None  # topic for topic rules; category (e.g. "suicidal") for urgent rules
    pattern: str  # the pattern as staff wrote it
    surface: str  # the words in the mail that matched
    start: int  # character offset in the analysed text (subject + "\n" + new text)
    end: int
    discounted: str | None = None  # why it did not count ("negated", "idiom", ...), else None
    # signal combinations: (concept, words in the mail) for each concept that combined
    parts: tuple[tuple[str, str], ...] = ()


@dataclass
class Triage:
    """The decision for one letter, with its evidence."""

    topic: str = "other"
    topics: list[tuple[str, float]] = field(default_factory=list)  # ranked, with scores
    urgent: bool = False
    urgent_reasons: list[Match] = field(default_factory=list)  # the urgent matches that counted
    matches: list[Match] = field(default_factory=list)  # every match, counted or discounted
    language: str = "ja"
    needs_human: bool = False  # e.g. undecodable mail: a person must read it today


# -- negation scope --------------------------------------------------------------------
# Words that may stand between a match and a negation that still negates it:
# 死にたい|と|思わ|ない, 死にたい|わけ|じゃ|ない, 死にたい|なんて|思っ|て|ませ|ん, and the
# nouns of the double-negation frame 〜ない|日|は|ない. Any other word ends the scope, so
# 死にたい気持ちが止まらない is NOT negated (止まる is not in the frame).
_NEGATION_FRAME = frozenset(
    [
        "と",
        "か",
        "とか",
        "なんて",
        "なんか",
        "って",
        "て",
        "で",
        "は",
        "も",
        "じゃ",
        "など",
        "の",
        "ん",
        "わけ",
        "訳",
        "事",
        "こと",
        "日",
        "時",
        "瞬間",
        "思う",
        "考える",
        "言う",
        "感じる",
        "有る",
        "ある",
        "居る",
        "いる",
        "為る",
        "気",
        "つもり",
        "積もり",
        "予定",
        "だ",
        "です",
        "ます",
        "た",
        "てる",
        "ちゃう",
        "訳だ",
        "全然",
        "別に",
        "たり",  # 切ったりはしていない, 死にたいと思ったりはしない
        "本当",
        "本気",
        "まで",
        "そう",  # 死のうとか、そういう気持ちはありません
        "気持ち",
        "考え",
        "感じ",
        # 一度も/一回も〜ない: the commonest way to say it never happened (死にたいなんて
        # 一度も思ったことはない); が only after こと (_GA_AFTER), not お金がない
        "一",
        "度",
        "回",
        "一日",  # 〜思わない日が一日もない: the double negation of the 日 frame
    ]
)
_SHIKA = "しか"  # 〜しか…ない is an emphatic positive: it cancels its own negation
_SCOPE_LIMIT = 8
# Past the limit, a scope that stands negated is still read on for a second negation
# that cancels it (死にたいと思う時が無いとは言えない, 〜思わない日が一日もない): the
# far reach can only keep a wish urgent, never deny one.
_DOUBLE_REACH = 2 * _SCOPE_LIMIT
# Words of 一度も / 一回も / 一日も that do not use up the scope: 死にたいなんて一度も思ったことは
# ない is no farther from its negation than 死にたいなんて思ったことはない.
_FREE_IN_SCOPE = frozenset({"一", "度", "回", "一日"})
# 〜たことがない (死にたいと思ったことがない, 〜思わない日が一日もない): が is part of the
# frame after こと, 日 and 時 only; after any other word it ends the scope, so a topic or
# concept word (お金がない, 食べ物がない) is never negated by what is said about it.
_GA_AFTER = frozenset({"事", "こと", "日", "時"})
# The potential of a verb of thought is part of the frame (死にたいとしか考えられない: the
# scope must reach the negation that しか cancels; 〜とは考えられない); after any other
# verb it ends the scope (ありがとうと言われたことはない, いじめられてはいない).
_POTENTIAL = frozenset({"れる", "られる"})


_NOT_A_DENIAL = frozenset({"か", "振り"})  # lemmas after a negation that undo the denial
# Verbs of the frame that hold the wish as a thought (死にたいと思う); once one of them has
# affirmed it, a later verb of telling takes the negation: 死にたいと思ってる事は言ってない
# and 死にたいとか思ってても言えない say the wish is there and is kept secret.
_THOUGHT_VERBS = frozenset({"思う", "考える", "感じる"})
_TELL = "言う"


def _cannot_tell(info: TokenInfo) -> bool:
    """言え(ない) / いえ(ない): "cannot say", the potential of 言う (UniDic keeps 言う).

    Why: 死にたいなんて言えない, 消えたいって言えない tell of a wish that cannot be
    spoken, not a denial of it ("a hedge that implies there is something is urgent",
    tests/data/README.md); 死にたいなんて言ってない (never said it) stays a denial.
    """
    return info.lemma == _TELL and info.surface.endswith(("え", "エ"))


def _negated(a: Analysis, last: int, duty_affirms: bool = True) -> bool:
    """Is the match ending at token ``last`` denied by a negation after it?

    ``duty_affirms``: whether 〜ないといけない (a duty) affirms the match, as it does a
    crisis phrase (出ていかんといけん: must leave home). For a signal concept word it
    does not (see ``_OBLIGATION``).
    """
    infos, sentences = a.infos, a.sentences
    sentence = sentences[last]
    flips = 0
    thought = False  # a verb of thought has affirmed the wish (see _THOUGHT_VERBS)
    i = last + 1
    n = len(infos)
    used = 0  # words of the scope used up (_FREE_IN_SCOPE words cost nothing)
    while i < n and sentences[i] == sentence:
        info = infos[i]
        if info.lemma not in _FREE_IN_SCOPE:
            used += 1
        if used > _SCOPE_LIMIT and (flips % 2 == 0 or used > _DOUBLE_REACH):
            break
        if (
            info.negation
            and i + 1 < n
            and (infos[i + 1].lemma in _NOT_A_DENIAL or _unless(infos, sentences, i, duty_affirms))
        ):
            # 〜ありませんか / 〜ないか: an offer or a question; 〜ないふり: pretending
            # (死にたくないふりをしている says the wish is there: review rv9d);
            # 〜んと落ち着かん: a condition (see _unless)
            pass
        elif info.negation and _asks(a, i):
            # 死にたいって思わない? / 思うことないの?: a question to the reader, usually
            # before the writer's own answer (私は毎日思う), not a denial (review rv12b)
            pass
        elif info.lemma == _SHIKA:
            # X しか…ない = only X: the しか and its own ない cancel, so X stands as it is
            # when しか comes. Not negated yet, X is affirmed (死ぬことしか考えられない,
            # 自殺しか道がない, 死にたいとしか思えない). Counted as one flip waiting for
            # its ない, the lone しか turned the count whenever another word ended the
            # scope before that ない (review rv12a, finding 1). Negated already
            # (死にたくないとしか言えない: "all I can say is I don't want to die"), it is
            # a hedge, and a hedge that implies there is something is urgent, as it was
            # before this rule (review rv12b): a denial is never read through しか.
            return False
        elif info.negation:
            flips += 1
        elif info.lemma == _TELL and (thought or _cannot_tell(info)) and not flips:
            # the negation that follows is about telling, not about the wish
            break
        elif info.lemma not in _NEGATION_FRAME and not (
            (info.lemma == "が" and infos[i - 1].lemma in _GA_AFTER)
            or (info.lemma in _POTENTIAL and infos[i - 1].lemma in _THOUGHT_VERBS)
        ):
            if info.lemma in _PEOPLE and flips and i - 1 > last and infos[i - 1].negation:
                flips -= 1  # 死にたいと思わない人: the negation describes other people
            break
        elif info.lemma in _THOUGHT_VERBS and not flips:
            thought = True
        i += 1
    return flips % 2 == 1 and not _called_a_lie(infos, sentences, i, sentence)


_QUESTION_MARKS = ("?", "？")
_QUESTION_PARTICLES = frozenset({"の", "ん"})


def _asks(a: Analysis, i: int) -> bool:
    """Does the negation at token ``i`` end a question: 思わない? or 思わないの? / 思わないん?

    Only a question mark right after it (or after の / ん) counts: 思ってないよ? is a
    reassurance with a denial in it, and stays one.
    """
    end = a.ends[i]
    k = i + 1
    if k < len(a.infos) and a.starts[k] == end and a.infos[k].lemma in _QUESTION_PARTICLES:
        end = a.ends[k]
    return a.normalised.startswith(_QUESTION_MARKS, end)


# Predicates that, after 〜ないと / 〜んと, make it a condition like a negation does:
# 切らないと無理 ("I can't go on unless I cut").
_UNLESS_PREDICATES = frozenset({"無理", "駄目", "だめ", "ダメ"})
_UNLESS_REACH = 4  # words after と searched for the predicate's negation
# 〜ないといけない / ならない / 駄目 / あかん: a duty. It affirms a crisis phrase
# (出ていかんといけん: must leave home tomorrow) but not a signal concept word: there the
# denial stands, as before the "unless" reading, because the duty's own verb counted as a
# concept (課題を終わらせないといけない became "finality", and 87 of 100 generated
# ordinary mails alerted through a signal combination). 駄目 is a duty only when it ends
# the phrase: 〜ないとダメになる (I fall apart) is the "unless" reading.
_OBLIGATION = frozenset({"行く", "成る", "あかん"})
_NO_GOOD = frozenset({"駄目", "だめ", "ダメ"})


def _unless(infos: list[TokenInfo], sentences: list[int], i: int, duty_affirms: bool) -> bool:
    """Is the negation at ``i`` the "unless" of 〜ないと / 〜んと + a negative predicate?

    Why: 自分を傷つけんと落ち着かん and リスカせんとやってられん say the writer cannot
    cope without harming themself (review rv11a, finding 5), but と is in the negation
    frame, so the first ん was read as a denial of the match. The predicate after と must
    itself be negative or 無理/駄目 within a few words; a verb of thought or of telling
    after と keeps the denial (死にたくないと思う, 死にたくないと言った), as does a duty
    for a concept word (``duty_affirms`` false, ``_OBLIGATION``) and any other verb with no
    negation after it (自傷はしないと決めた, 死なないと誓った).
    """
    if infos[i + 1].lemma != "と":
        return False
    sentence = sentences[i]
    first = i + 2
    if first >= len(infos) or sentences[first] != sentence:
        return False
    lemma = infos[first].lemma
    if lemma in _THOUGHT_VERBS or lemma in (_TELL, _SHIKA):
        # 〜ないとしか言えない / 思えない: the clause before と is what is said or
        # thought, with the emphatic しか…ない, not a condition (review rv12a)
        return False
    if not duty_affirms and (
        lemma in _OBLIGATION
        or (lemma in _NO_GOOD and not (first + 1 < len(infos) and infos[first + 1].surface == "に"))
    ):
        return False
    for k in range(first, min(len(infos), first + _UNLESS_REACH)):
        if sentences[k] != sentence:
            return False
        if infos[k].negation or infos[k].lemma in _UNLESS_PREDICATES:
            return True
    return False


# A negation right before one of these describes other people, not the writer:
# 死にたいと思わない人がうらやましい, 〜思ったことがない人には分からない.
_PEOPLE = frozenset({"人", "人間", "者", "人達"})
_LIE = "嘘"
_LIE_REACH = 5  # words after the scope in which 嘘 takes back its denial


def _called_a_lie(infos: list[TokenInfo], sentences: list[int], i: int, sentence: int) -> bool:
    """Does the writer call the denial a lie right after it (〜ないと言えば嘘になる)?

    Why: 死にたいと思ったことがないと言えば嘘になる and 〜ないなんて嘘 say the wish is
    there; 嘘じゃない (it is no lie) leaves the denial standing.
    """
    end = min(len(infos), i + _LIE_REACH)
    for j in range(i, end):
        if sentences[j] != sentence:
            return False
        if infos[j].lemma == _LIE:
            return not any(info.negation for info in infos[j + 1 : j + 4])
    return False


# -- language ---------------------------------------------------------------------------
# The letters of each script, as inclusive code point ranges.
_SCRIPT_RANGES = {
    "kana": ((0x3041, 0x3096), (0x30A1, 0x30FA), (0xFF66, 0xFF9D)),  # ぁ-ゖ ァ-ヺ ｦ-ﾝ
    "han": ((0x4E00, 0x9FFF), (0x3400, 0x4DBF)),
    "hangul": ((0xAC00, 0xD7AF),),
    "latin": ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x1E00, 0x1EFF)),  # A-Z a-z À-ɏ Ḁ-ỿ
    # scripts of the foreign tier's "other" groups: Cyrillic, Devanagari and Bengali,
    # Sinhala, Thai, Burmese, Khmer
    "other": (
        (0x0400, 0x04FF),
        (0x0900, 0x09FF),
        (0x0D80, 0x0DFF),
        (0x0E00, 0x0E7F),
        (0x1000, 0x109F),
        (0x1780, 0x17FF),
    ),
}
_SCRIPT_SPANS = sorted((lo, hi, name) for name, spans in _SCRIPT_RANGES.items() for lo, hi in spans)
# bucket 2k+1 of ``searchsorted(_SCRIPT_EDGES, code, side="right")`` is the k-th span
_SCRIPT_EDGES = np.array([x for lo, hi, _ in _SCRIPT_SPANS for x in (lo, hi + 1)], np.uint32)
_SCRIPT_OF_BUCKET = [name for _, _, name in _SCRIPT_SPANS]
_VIET = re.compile(r"[ăâđêôơưĂÂĐÊÔƠƯạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ]")
_WORD = re.compile(r"[a-zà-ÿ]+")
_PT = frozenset(
    [
        "não",
        "que",
        "eu",
        "meu",
        "minha",
        "estou",
        "para",
        "com",
        "uma",
        "você",
        "por",
        "isso",
        "ajuda",
        "muito",
        "sou",
        "tenho",
    ]
)
_EN = frozenset(
    [
        "the",
        "and",
        "i",
        "to",
        "my",
        "is",
        "of",
        "you",
        "me",
        "am",
        "have",
        "not",
        "this",
        "with",
        "it",
        "help",
    ]
)


@dataclass(frozen=True, slots=True)
class _Scripts:
    """Letters per script in a text: counted once, used by the language and kana checks."""

    kana: int
    han: int
    hangul: int
    latin: int
    other: int = 0  # letters of the foreign tier's "other" scripts (Thai, Khmer, ...)

    @classmethod
    def of(cls, text: str) -> _Scripts:
        """Count with NumPy: one pass over the code points instead of a regex per script.

        Why: four regex scans of a 2 KB mail cost ~40 us, one ``searchsorted`` and
        ``bincount`` ~8 us. Lone surrogates (which cannot be letters) pass through.
        """
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
        buckets = np.bincount(
            np.searchsorted(_SCRIPT_EDGES, codes, side="right"), minlength=len(_SCRIPT_EDGES)
        )
        count = dict.fromkeys(_SCRIPT_RANGES, 0)
        for k, name in enumerate(_SCRIPT_OF_BUCKET):
            count[name] += int(buckets[2 * k + 1])
        return cls(count["kana"], count["han"], count["hangul"], count["latin"], count["other"])


def _mostly_kana(scripts: _Scripts, language: str) -> bool:
    """At least a third of the letters are kana: Japanese however much kanji it has."""
    if language != "ja":
        return False  # detect_language found less than a tenth kana
    kana = scripts.kana
    return kana * 3 >= kana + scripts.han + scripts.latin


def detect_language(text: str, scripts: _Scripts | None = None) -> str:
    """Cheap script/stopword guess: "ja", "zh", "ko", "vi", "pt", "en" or "und".

    Japanese always carries kana, so kana present (at least a tenth of the letters) is
    Japanese; Han without kana is Chinese; Latin with Vietnamese letters is Vietnamese;
    otherwise Portuguese vs English by stopwords. No library: this runs on every mail.
    ``scripts`` is ``text``'s letter count when the caller already has it.
    """
    if scripts is None:
        scripts = _Scripts.of(text)
    kana, han, hangul, latin = scripts.kana, scripts.han, scripts.hangul, scripts.latin
    letters = kana + han + hangul + latin
    if letters == 0:
        return "und"
    if kana and kana * 10 >= letters:
        return "ja"
    if han >= max(latin, hangul) and han:
        return "zh"
    if hangul >= latin:
        return "ko"
    if len(_VIET.findall(text)) >= 2:
        return "vi"
    words = _WORD.findall(text.lower())
    pt = sum(w in _PT for w in words)
    en = sum(w in _EN for w in words)
    if pt > en:
        return "pt"
    if en:
        return "en"
    return "ja" if kana else "und"


# -- the interpreter --------------------------------------------------------------------
@dataclass(slots=True)
class _Hit:
    pattern: Pattern
    first: int  # token indexes, inclusive
    last: int
    discounted: str | None = None


_StartEntry = tuple[Pattern, "Shape | None", int]


def _candidates(a: Analysis, rules: RuleSet) -> dict[TokenInfo, Sequence[_StartEntry]]:
    """For each distinct word of the mail, the patterns that may start at it, in rule order.

    A longer pattern can only match when every one of its words occurs somewhere in the
    mail; ``RuleSet.token_patterns`` lists, per word, the one-word patterns it matches,
    the longer patterns it is the rarest word of and which pattern words it stands for,
    so the check is one subset test for each of the few patterns whose rarest word is
    present. Each word also carries, ready-made and in rule order, every pattern that
    may start at it (``TokenPatterns.starts``); keeping the live ones is one set lookup
    each. The work is done on the distinct words of the mail (a hundred or so), not on
    every token.
    """
    words = list(dict.fromkeys(a.infos))
    plans = rules.plans(words)
    present = frozenset().union(*[plan.words for plan in plans])
    # 0 stands for every one-word pattern (TokenPatterns.starts): always live
    live = {0}
    live.update(id(p) for plan in plans for p, needs in plan.anchored if needs <= present)
    at: dict[TokenInfo, Sequence[_StartEntry]] = {}
    live_starts = rules.live_starts
    for info, plan in zip(words, plans, strict=True):
        if plan.longer:
            # the live longer patterns of this word, one C-level intersection (a mail
            # keeps a few dozen of the thousands live), then the cached filtered list
            mine = plan.longer_ids & live
            entries = live_starts(plan, mine) if mine else plan.single_starts
            if entries:
                at[info] = entries
        elif plan.starts:
            at[info] = plan.starts
    return at


def _find(a: Analysis, rules: RuleSet) -> list[_Hit]:
    """Every occurrence of every compiled pattern that can match the mail.

    Hits come in token order, and at one token in rule order, so the evidence lists
    (and which word a signal combination quotes) are the same on every run.
    """
    # phrase numbers: on わかちがき lines a phrase may cross a space (Analysis.phrases)
    infos, sentences = a.infos, a.phrases
    candidates = _candidates(a, rules)
    if not candidates:
        return []
    gap = rules.settings.gap
    n = len(infos)
    keys = list(map(_KEYS, infos))  # read once: the walks test them again and again
    hits: list[_Hit] = []
    add = hits.append
    for i, entries in enumerate(map(candidates.get, infos)):
        if entries is None:
            continue
        sentence = sentences[i]
        for pattern, shape, _ in entries:
            if shape is None:
                # one word: the token carries one of its keys (RuleSet.token_patterns)
                add(_Hit(pattern, i, i))
                continue
            rest, length, later, extra, own_gap = shape
            # The first segment is pinned at i, and its first word is the token's own
            # (that is why the pattern is a candidate here): check the rest of it, in
            # the same sentence, before anything else.
            pos = i + length
            if pos > n or sentences[pos - 1] != sentence:
                continue
            k = i
            for word in rest:
                k += 1
                if word.isdisjoint(keys[k]):
                    break
            else:
                if not later:
                    add(_Hit(pattern, i, pos - 1))
                    continue
                # the last sentence the pattern's words may reach (parts of a window rule
                # may spread over consecutive sentences: 屋上にいる。全然怖くない。)
                last_sentence = sentence + extra
                pattern_gap = gap if own_gap is None else own_gap
                for one, segment in later:
                    limit = pos + pattern_gap
                    if one is not None:
                        # one word (most later segments): the first token in reach that
                        # carries it, without leaving the pattern's sentences
                        end = limit if limit < n else n - 1
                        start = pos
                        while start <= end and sentences[start] <= last_sentence:
                            if not one.isdisjoint(keys[start]):
                                break
                            start += 1
                        else:
                            break  # not in reach: no match here
                        pos = start + 1
                        continue
                    length = len(segment)
                    start = pos
                    found = False
                    while start <= limit and start + length <= n:
                        if sentences[start + length - 1] > last_sentence:
                            break
                        if sentences[start] != sentences[start + length - 1]:
                            start += 1  # a segment's own words never straddle sentences
                            continue
                        for k in range(length):
                            if segment[k].isdisjoint(keys[start + k]):
                                break
                        else:
                            found = True
                            break
                        start += 1
                    if not found:
                        break
                    pos = start + length
                else:
                    add(_Hit(pattern, i, pos - 1))
    return hits


_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|aw|tr|sv|返信|転送)\s*[:：]\s*)+", re.IGNORECASE)
_REPEATED = re.compile(r"(.{2,8}?)\1+")
_NOT_LETTER = re.compile(r"[\W_]+")
# Above this many letters a mail is long whatever it repeats: the run-collapsing scan
# (a few µs per hundred letters) is skipped, so long mail pays one C-speed substitution.
_LONG_LETTERS = 400


def _few_words_length(subject: str, text: str) -> int:
    """How long a mail is for the few-words rules: the letters the resident wrote.

    Letters and digits only (emoji, punctuation and spaces do not make a cry for help
    longer: 助けて😭😭😭, たすけて！！！), a run repeated back to back counts once
    (もう無理もう無理もう無理), and the subject not at all when it is a reply's or a
    forward's (Re: 【笠岡市】…): replying to our acknowledgement with 助けて is the most
    likely few-words mail of all, and the quoted subject is not the resident's words.
    """
    if _REPLY_PREFIX.match(subject):
        subject = ""
    letters = _NOT_LETTER.sub("", subject + text)
    if len(letters) > _LONG_LETTERS:
        return len(letters)
    return len(_REPEATED.sub(r"\1", letters))


def _for_length(
    hits: list[_Hit],
    subject: str,
    text: str,
    few_words_ids: frozenset[int] | None = None,
    longest_max_chars: float = math.inf,
) -> list[_Hit]:
    """Keep the hits of patterns meant for short mail (``max_chars``) only where they fit.

    Why a length at all: a mail that is nothing but 死ぬ or 助けて is a cry for help, while
    the same word in a long mail is usually an idiom or a story, which the other rules
    judge in context. Length is ``_few_words_length``. In a short mail such a hit is also
    dropped where an urgent or exclusion pattern without a length already explains its
    words (死にたいとかではない is judged, negation and all, by the wish rule; 死ぬほど by
    the idiom), so a few-words rule only ever speaks for words nothing else has judged.
    ``few_words_ids`` and ``longest_max_chars``: the ids of the patterns with
    ``max_chars`` and their largest ``max_chars`` (``RuleSet.build_index``), when known.
    """
    if few_words_ids is not None:
        # one C-level pass over the hits' patterns instead of a generator over them
        if few_words_ids.isdisjoint(map(id, map(_PATTERN, hits))):
            return hits  # most mail: no few-words word at all, nothing to measure
    elif all(h.pattern.max_chars is None for h in hits):
        return hits
    chars = _few_words_length(subject, text)
    if chars > longest_max_chars:
        # longer than every few-words pattern allows (most mail that has such a word):
        # the test below would drop all their hits and keep all others
        return [h for h in hits if h.pattern.max_chars is None]
    covered: set[int] = set()
    for h in hits:
        p = h.pattern
        # the past / resolved / relapse words of the resolved-past rule judge nothing by
        # themselves: 止められた is also its "managed to quit" (やめられた), which had
        # silenced 電気止められた as all the mail says
        if (
            p.max_chars is None
            and p.kind in ("urgent", "exclusion")
            and not (p.label or "").startswith("resolved-past:")
        ):
            covered.update(range(h.first, h.last + 1))
    return [
        h
        for h in hits
        if h.pattern.max_chars is None
        or (chars <= h.pattern.max_chars and covered.isdisjoint(range(h.first, h.last + 1)))
    ]


def _discount(a: Analysis, hits: list[_Hit], rules: RuleSet) -> None:
    """Set ``discounted`` on topic/urgent hits that must not count."""
    by_rule: dict[str, list[_Hit]] = {}
    judged: list[_Hit] = []
    negated: dict[int, bool] = {}  # by last token: many hits end on the same word
    sentences = a.sentences
    for h in hits:
        p = h.pattern
        if p.kind == "exclusion":
            by_rule.setdefault(f"{p.rule}|{p.label}", []).append(h)
            continue
        judged.append(h)
        # reading-tier hits (no segments) were judged for negation on the reading.
        # A しか inside the match (死ぬ|こと|しか|考え) makes the negation after it the
        # "only" of しか…ない, not a denial (review rv12a, finding 1).
        if p.segments and not any(a.infos[k].lemma == _SHIKA for k in range(h.first + 1, h.last)):
            last = h.last
            # a duty affirms a crisis phrase or topic word, not a concept word (_OBLIGATION)
            duty_affirms = p.kind != "signal"
            key = last if duty_affirms else -1 - last
            known = negated.get(key)
            if known is None:
                known = negated[key] = _negated(a, last, duty_affirms)
            if known:
                h.discounted = "negated"
    excluded = {key.partition("|")[0] for key in by_rule}  # exclusions with words here
    for ex in rules.exclusions:
        if ex.id not in excluded:
            continue  # each discount below needs some of the exclusion's own words

        def applies(h: _Hit, ex: Any = ex) -> bool:
            if h.discounted:
                return False
            kind = h.pattern.kind
            if ex.applies_to:
                if kind == "signal":  # "signals" or "signals.<concept>"
                    return "signals" in ex.applies_to or h.pattern.rule in ex.applies_to
                return h.pattern.label in ex.applies_to or h.pattern.rule in ex.applies_to
            return kind in ("urgent", "signal")

        if ex.discount == "idiom":
            spans = by_rule.get(f"{ex.id}|idiom:patterns", [])
            if not spans:
                continue
            # the idioms' token indexes: a hit overlaps an idiom exactly when it shares
            # one of them (spans are inclusive), one set lookup for a one-word hit
            inside = {k for s in spans for k in range(s.first, s.last + 1)}
            for h in judged:
                # the cheap overlap test first: most hits are nowhere near an idiom
                first, last = h.first, h.last
                if first == last:
                    if first not in inside:
                        continue
                elif inside.isdisjoint(range(first, last + 1)):
                    continue
                if applies(h):
                    h.discounted = "idiom"
        elif ex.discount == "reported":
            sents = {
                a.sentences[s.first] + d
                for s in by_rule.get(f"{ex.id}|reported:patterns", [])
                for d in range(-ex.reach, ex.reach + 1)
            }
            if not sents:
                continue
            for h in judged:
                if sentences[h.first] not in sents:
                    continue  # most hits: the cheapest test first
                # Without applies_to, only words that can describe an event are discounted;
                # with it, the rule names the categories itself (a character's wish).
                reportable = (
                    bool(ex.applies_to)
                    or h.pattern.kind == "signal"  # a concept word can be anyone's
                    or h.pattern.rule in rules.reportable
                )
                if reportable and applies(h):
                    h.discounted = "reported"
        else:  # resolved-past
            if by_rule.get(f"{ex.id}|resolved-past:relapse"):
                continue  # "また最近…": the past has come back, nothing is resolved
            past = {a.sentences[s.first] for s in by_rule.get(f"{ex.id}|resolved-past:past", [])}
            resolved = by_rule.get(f"{ex.id}|resolved-past:resolved", [])
            if not past or not resolved:
                continue  # nothing said in the past tense, or nothing said to be over
            for h in judged:
                sentence = a.sentences[h.first]
                if (
                    (sentence in past or sentence - 1 in past)
                    and any(r.first > h.last for r in resolved)
                    and applies(h)
                ):
                    h.discounted = "resolved-past"


# -- risk signals -----------------------------------------------------------------------
_FOREIGN_BOUNDARY = re.compile(r"[.!?。！？\n]+")


@dataclass(slots=True)
class _Sig:
    """One counted concept word: its sentence and its span (tokens, or characters)."""

    concept: str
    sentence: int
    lo: int  # token index (Japanese) or character offset (foreign), inclusive
    hi: int


def _signal_hits(
    a: Analysis, hits: list[_Hit], analysed: str, language: str, rules: RuleSet
) -> dict[str, list[_Sig]]:
    """Counted concept words per concept.

    Japanese mail uses the analyser's words (and ``regex_ja`` mapped onto its tokens);
    other languages use the concept regexes with sentences cut at . ! ? and newlines.
    """
    by: dict[str, list[_Sig]] = {}
    if language == "ja":
        for h in hits:
            if h.pattern.kind == "signal" and h.discounted is None:
                label = h.pattern.label or ""
                by.setdefault(label, []).append(_Sig(label, a.sentences[h.first], h.first, h.last))
        if a.infos:
            text = a.normalised
            needles_of = rules.regex_needles
            for concept in rules.concepts_ja:  # the concepts with regexes_ja, in order
                if not _may_combine(concept.id, by, rules):
                    continue
                for rx in concept.regexes_ja:
                    if not _has_needles(text, needles_of.get(id(rx), ())):
                        continue  # a word every match contains is absent (rules.needles)
                    for m in rx.finditer(text):
                        lo = max(bisect_right(a.starts, m.start()) - 1, 0)
                        hi = max(bisect_left(a.starts, m.end()) - 1, lo)
                        by.setdefault(concept.id, []).append(
                            _Sig(concept.id, a.sentences[lo], lo, hi)
                        )
        return by
    boundaries = [m.end() for m in _FOREIGN_BOUNDARY.finditer(analysed)]
    lowered = _lowered(analysed)
    for concept_id, rx, plain, folded in rules.foreign_scans:
        # a word every match contains is absent (rules.folded_needles): tested inline, as
        # ~950 regexes are asked for every non-Japanese mail
        if (plain and not _has_needles(analysed, plain)) or (
            folded and lowered is not None and not _has_needles(lowered, folded)
        ):
            continue
        for m in rx.finditer(analysed):
            sentence = bisect_right(boundaries, m.start())
            by.setdefault(concept_id, []).append(_Sig(concept_id, sentence, m.start(), m.end() - 1))
    return by


def _lowered(text: str) -> str | None:
    """``text.lower()`` for ``folded_needles``, or None when it has an ASCII look-alike
    (ı, ſ, ...): only the plain needles can then be trusted."""
    return None if any(c in text for c in ASCII_LOOKALIKES) else text.lower()


_Needles = tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]


def _foreign_may_match(text: str, lowered: str | None, needles: _Needles) -> bool:
    """Could a foreign regex with ``needles`` (``RuleSet.foreign_needles``) match ``text``?

    False only when a string every match contains is missing: from ``text`` (the plain
    needles), or from its lower-cased form ``lowered`` (``_lowered``; the folded needles).
    """
    return _some_may_match(text, lowered, (needles,))


def _some_may_match(text: str, lowered: str | None, gates: tuple[_Needles, ...]) -> bool:
    """``any(_foreign_may_match(text, lowered, n) for n in gates)``, without a call each.

    Why: a [[foreign]] rule joins up to ~35 patterns, and a call per pattern cost about
    as much as the scan it saves (RuleSet.foreign_gates).
    """
    for plain, folded in gates:
        if (not plain or _has_needles(text, plain)) and (
            not folded or lowered is None or _has_needles(lowered, folded)
        ):
            return True
    return False


def _has_needles(text: str, needles: tuple[tuple[str, ...], ...]) -> bool:
    """``all(any(s in text for s in group) for group in needles)``, without generators.

    Why: a mail checks about seven regular expressions' needles, and two nested
    generators cost more than the ``in`` tests they run (~1.5 us each).
    """
    for group in needles:
        for s in group:
            if s in text:
                break
        else:
            return False
    return True


def _may_combine(concept: str, by: dict[str, list[_Sig]], rules: RuleSet) -> bool:
    """Could words of ``concept`` complete a combination, given the concepts found so far?

    Why: a concept's regular expressions scan the whole text, and their words only matter
    inside a combination. A combination whose other concepts have no word in the mail
    (and no regular expression that might still find one) cannot fire, so when that is
    true of every combination naming ``concept`` the scan is skipped. Every combination
    has two or more concepts, so the skip cannot change which ones fire.
    """
    for combo in rules.combos_by_concept.get(concept, ()):
        if all(
            name == concept or name in by or rules.concepts[name].regexes_ja
            for name in combo.concepts
        ):
            return True
    return False


# Chat-style mail: all-hiragana lines cut by spaces (いま そうこに とじこめられてる そとから
# かぎ …) have "sentences" of a few words, so a window of two or three of them is a
# fraction of what the same words span in written Japanese. Such mail gets wider windows.
_CHAT_MIN_SENTENCES = 5
_CHAT_SENTENCE_CHARS = 12
_CHAT_STRETCH = 3


def _in_window(
    combo: Combination, by: dict[str, list[_Sig]], whole: bool, stretch: bool = False
) -> list[_Sig] | None:
    """One non-overlapping word per concept of ``combo`` inside its window, or None.

    ``stretch``: the mail is chat-style (spaces or line breaks instead of 。, so each
    "sentence" is a few words); a window then spans three times as many of them.
    """
    first, *rest = combo.concepts
    width = combo.window * _CHAT_STRETCH if stretch else combo.window
    for anchor in by[first]:
        starts = [0] if whole else range(anchor.sentence - width + 1, anchor.sentence + 1)
        for s in starts:
            chosen = [anchor]
            for name in rest:
                for sig in by[name]:
                    if (whole or s <= sig.sentence < s + width) and all(
                        sig.hi < c.lo or c.hi < sig.lo for c in chosen
                    ):
                        chosen.append(sig)
                        break
                else:
                    break
            if len(chosen) == len(combo.concepts):
                return chosen
    return None


def _signal_matches(
    a: Analysis, hits: list[_Hit], analysed: str, language: str, rules: RuleSet
) -> list[Match]:
    """The signal combinations found, counted when their scores reach the threshold.

    Cheap by construction: concept words were found with every other pattern, and
    combinations are only tried when two or more concepts are present.
    """
    if not rules.combinations:
        return []
    by = _signal_hits(a, hits, analysed, language, rules)
    if len(by) < 2:
        return []
    settings = rules.signal_settings
    chars = len("".join(analysed.split()))
    whole = chars <= settings.short_mail
    stretch = False
    if language == "ja" and a.infos:
        sentences = a.sentences[-1] + 1
        stretch = sentences >= _CHAT_MIN_SENTENCES and chars / sentences < _CHAT_SENTENCE_CHARS
    fired: list[tuple[Combination, list[_Sig]]] = []
    # the first concept alone rules out most combinations: only those whose first
    # concept has words here are tried, in ``rules.combinations`` order
    by_first = rules.combos_by_first
    tried = [entry for name in by for entry in by_first.get(name, ())]
    tried.sort(key=_PLACE)
    for _, combo in tried:
        if all(name in by for name in combo.concepts):
            # window = 1 means "in one sentence" even in a short mail: 薬 … まとめて … 飲む
            # spread over a carer's two sentences is a pill organiser, not an overdose
            chosen = _in_window(combo, by, whole and combo.window > 1, stretch)
            if chosen is not None:
                fired.append((combo, chosen))
    if not fired:
        return []
    score = sum(combo.score for combo, _ in fired)
    discounted = None if score >= settings.threshold else "below-threshold"
    out = []
    for combo, chosen in fired:
        spans = []
        for sig in chosen:
            if language == "ja":
                spans.append(a.span(sig.lo, sig.hi))
            else:
                spans.append((sig.lo, sig.hi + 1))
        parts = tuple(
            (sig.concept, a.text[start:end] if language == "ja" else analysed[start:end])
            for sig, (start, end) in zip(chosen, spans, strict=True)
        )
        out.append(
            Match(
                combo.id,
                "urgent",
                combo.category,
                " + ".join(combo.concepts),
                " + ".join(words for _, words in parts),
                min(start for start, _ in spans),
                max(end for _, end in spans),
                discounted,
                parts,
            )
        )
    return out


# -- the reading tier -------------------------------------------------------------------
# A negation right after a stem on the reading: しにたいとかじゃない, じさつしたいとはおもわない,
# きえたくない (the stem stops before く). Particles and the verbs of the frame may come
# between, as in the token-level scope; anything else ends it. A bare ん negates only
# after a verb's negative stem (おもわん, かんがえん): after a stem ending in い it is the
# explanatory の of dialect and speech (しにたいんよ, しにたいんやわ).
_READING_NEGATION = re.compile(
    r"(?:い|く)?(?:とか|なんて|なんか|って|と|わけ|とは|では|じゃ|は|も|まで|べつに|ぜんぜん"
    r"|おもったり|おもったこと|おもって|おもわ|おもえ|かんがえ|きもち|ことは|こと)*"
    r"(?P<neg>ない|なく(?=て)|ねえ|ねぇ|ません|ありません|なかった|ず|(?<=[わえ])ん(?!だ|で|じゃ|か))"
    r"(?!か|ふり)"  # 〜ないか: a question or an offer; 〜ないふり: pretending (as _negated)
)
# ... unless it is doubled: しにたいとおもわないひはない
_READING_DOUBLE = re.compile(
    r"(?:ひ|とき|こと|しゅんかん|よる|あさ)(?:は|が|も)?(?:ない|ありません|ねえ)"
)


_READING_LIE_REACH = 10  # characters after a negation on the reading searched for うそ


def _reading_negated(reading: str, end: int, owner: list[int], infos: list[TokenInfo]) -> bool:
    """Is the reading-tier match ending at ``end`` negated, as ``_negated`` would judge it?

    The negation must be words of the analyser's own: it ends where a word ends, and one
    of its words is a negation. Why: the reading has no word boundaries, so the ない of
    泣いてた (ないてた) and the ん of 感じる (とかんじる) read as negations and discounted a
    present wish (4にたいって泣いてた) that the same words in kanji kept urgent.
    """
    m = _READING_NEGATION.match(reading, end)
    if m is None:
        return False
    stop = m.end()
    if stop < len(owner) and owner[stop] == owner[stop - 1]:
        return False  # the "negation" is the start of a longer word
    if not any(infos[owner[k]].negation for k in range(m.start("neg"), stop)):
        return False
    rest = reading[stop : stop + _READING_LIE_REACH].partition("。")[0]
    lie = rest.find("うそ")
    if lie >= 0 and not rest.startswith(("うそじゃ", "うそでは"), lie):
        return False  # 〜ないといえばうそになる: as _called_a_lie
    return _READING_DOUBLE.match(reading, stop) is None


_KANA_OF = attrgetter("kana")


def _digit_in_kana(text: str) -> bool:
    """Is a 4 written next to hiragana (4ぬ, し4)? ``re.search("[ぁ-ゖ]4|4[ぁ-ゖ]")``'s answer.

    Why not that regex: it tries both alternatives at each of a mail's ~800 positions
    (~10 us), while a 4 is rare and ``str.find`` jumps from one to the next.
    """
    find = text.find
    i = find("4")
    while i >= 0:
        if (i and "ぁ" <= text[i - 1] <= "ゖ") or "ぁ" <= text[i + 1 : i + 2] <= "ゖ":
            return True
        i = find("4", i + 1)
    return False


def _kana_by_sentence(a: Analysis) -> str:
    """Token readings joined, with 。 between sentences (``Analysis.reading`` without its
    digit rule): one join per sentence, found by bisecting the sorted sentence numbers,
    so the cost stays that of the plain join."""
    kana = list(map(_KANA_OF, a.infos))
    sentences = a.sentences
    n = len(kana)
    parts: list[str] = []
    i = 0
    while i < n:
        j = bisect_right(sentences, sentences[i], i)
        parts.append("".join(kana[i:j]))
        i = j
    return "。".join(parts)


def _reading_may_match(a: Analysis, rules: RuleSet, subject: str) -> bool:
    """Cheap pre-check: could any reading pattern match? (Most mails: no.)

    The join of token readings, with 。 between sentences as in the full reading but no
    digit reading, finds every match the full reading can (a superset); a 4, or a
    subject-only rule matching the subject's plain join, sends the mail to the full check.
    The 。 matter: a pattern that ends at a sentence's end (たすけてぇ followed by 。 or
    the end) never matched a plain join whose next sentence followed at once, so
    たすけてぇ。お願い was not read at all (review rv11a).
    """
    kana = _kana_by_sentence(a)
    if subject.strip():
        end = a.normalised.find("\n")
        n = bisect_left(a.starts, len(a.normalised) if end < 0 else end)
        head = "".join(map(_KANA_OF, a.infos[:n]))
        if any(r.regex.search(head) for r in rules.reading if r.subject_only):
            return True
    if _digit_in_kana(a.normalised):
        return True
    return rules.reading_any is not None and rules.reading_any.search(kana) is not None


# Particles the analyser glues to the kana word after them: 今日はじさつしたい is read
# 今日|はじ (端)|さつ|し|たい, so the stem じさつ starts inside the word はじ.
_GLUED_PARTICLES = frozenset("はがもを")


def _glued_particle(reading: str, owner: list[int], start: int) -> bool:
    """Is all of the word before ``start`` (on the reading) one glued particle?

    Why: a match must start where a word starts (私に対して is not しにたい), but when
    MeCab has made one word of a particle and the first kana of a crisis word (はじ of
    はじさつ), the match starting after the particle is the writer's word.
    """
    token = owner[start]
    return (
        start >= 1
        and reading[start - 1] in _GLUED_PARTICLES
        and (start == 1 or owner[start - 2] != token or reading[start - 2] == "。")
    )


def _reading_hits(a: Analysis, hits: list[_Hit], rules: RuleSet, subject: str) -> list[_Hit]:
    """Crisis stems found on the kana reading where no phrase-tier hit covers the words.

    Why a third tier: the phrase tier matches lemmas, and writers blur crisis words in
    ways MeCab does not lemmatise (4ぬ, 死にたみ, じさつ split into じ+さつ, 生きてたくない,
    Okayama 死んだらおえん, romaji in the subject). The reading is what the writer would
    type in hiragana, so one stem list covers kanji, kana, digits and romaji. Words that a
    phrase or exclusion pattern already explained (counted or discounted) are left
    alone, so an idiom or a negation judged there is not judged again here (signal concept
    words do not count as explained: 縁 is a concept word, and it is also how MeCab reads
    the えん of Okayama おえん; nor do exclusions meant only for the few-words rules).
    """
    if not a.infos:
        return []
    if not _reading_may_match(a, rules, subject):
        return []
    reading, owner = a.reading()
    # An exclusion meant only for the few-words rules (死んだ is a report, not a wish, in
    # a mail of a few words) explains nothing for this tier: わしが死んだらおえん is read.
    narrow = rules.few_words_exclusions
    covered: set[int] = set()
    # A phrase hit discounted by a negation explains its words only to a reading match
    # that does not spell that negation itself: the phrase tier read kana もういきたくない
    # as 逝きたい + ない (a denial), while the reading pattern もういきたくない means the
    # negative wish (no will to live) and is the better judge of it (review rv11a).
    negated: list[tuple[int, int]] = []
    for h in hits:
        kind = h.pattern.kind
        # concept words are too common to count as explained
        if kind == "urgent" and h.discounted == "negated":
            negated.append((h.first, h.last))
        elif kind == "urgent" or (kind == "exclusion" and h.pattern.rule not in narrow):
            covered.update(range(h.first, h.last + 1))
    subject_tokens = 0
    if subject.strip():
        subject_end = a.normalised.find("\n")
        subject_end = len(a.normalised) if subject_end < 0 else subject_end
        subject_tokens = bisect_left(a.starts, subject_end)
    subject_chars = bisect_left(owner, subject_tokens)
    subject_reading = reading[:subject_chars]
    found: list[_Hit] = []
    for rule in rules.reading:
        haystack = subject_reading if rule.subject_only else reading
        if not haystack:
            continue
        for m in rule.regex.finditer(haystack):
            start, end = m.start(), m.end()
            if end <= start:
                continue
            first, last = owner[start], owner[end - 1]
            # inside a word (私に対して is not しにたい); the 。 put between sentences is
            # owned by the token after it, so a match right after it starts on a boundary
            if (
                start
                and owner[start - 1] == first
                and reading[start - 1] != "。"
                and not _glued_particle(reading, owner, start)
            ) or (end < len(owner) and owner[end] == last):
                continue
            if not covered.isdisjoint(range(first, last + 1)):
                continue
            if any(
                lo <= last
                and first <= hi
                and not any(a.infos[k].negation for k in range(hi + 1, last + 1))
                for lo, hi in negated
            ):
                continue
            pattern = Pattern(
                rule.rule,
                "urgent",
                rule.category,
                rule.text,
                (),
                1.0,
                rules.directory / "urgent.toml",
                rule.line,
            )
            hit = _Hit(pattern, first, last)
            if _reading_negated(reading, m.end(), owner, a.infos):
                hit.discounted = "negated"
            found.append(hit)
    return found


_BY_PLACE = attrgetter("start", "end", "rule")  # how evidence is listed
_FIRST = attrgetter("first")
_PATTERN = attrgetter("pattern")
_KEYS = attrgetter("keys")
_PLACE = itemgetter(0)
_WEIGHT = attrgetter("pattern.weight")
_new_object = object.__new__


def _evidence(
    rule: str,
    kind: str,
    topic: str | None,
    pattern: str,
    surface: str,
    start: int,
    end: int,
    discounted: str | None,
) -> Match:
    """``Match(...)`` without the frozen dataclass's ``__init__``, for the hot path.

    Why: a 2 KB mail yields ~70 matches, and a frozen dataclass sets each of its nine
    fields through ``object.__setattr__`` (~0.9 us a match, 60 us a mail). Filling the
    instance dict directly gives an equal, equally hashable and picklable ``Match``
    (``test_fast_evidence_equals_match`` holds the two together).
    """
    m = _new_object(Match)
    # one store per field, in field order (the dict then lists them as __init__ would);
    # ~20 % cheaper than ``update(**fields)``, which first builds a dict of keywords
    d = m.__dict__
    d["rule"] = rule
    d["kind"] = kind
    d["topic"] = topic
    d["pattern"] = pattern
    d["surface"] = surface
    d["start"] = start
    d["end"] = end
    d["discounted"] = discounted
    d["parts"] = ()
    return m


def _to_match(a: Analysis, h: _Hit, start: int = -1, end: int = -1) -> Match:
    """A hit as evidence; ``start``/``end`` are its span when the caller has it."""
    if start < 0:
        start, end = a.span(h.first, h.last)
    p = h.pattern
    return _evidence(p.rule, p.kind, p.label, p.text, a.text[start:end], start, end, h.discounted)


def _kept_evidence(a: Analysis, hits: list[_Hit]) -> tuple[list[Match], list[_Hit], list[_Hit]]:
    """The evidence of the judged hits, and the topic and signal hits in hit order.

    A pattern and its in-sentence variant may both hit the same words: each is reported
    once (the first place, the last hit's verdict), and a Match is built only for what
    is kept; signals report as combinations, not here. The same pass sorts the hits by
    kind for the later steps (each used to filter all of them again). When the offset
    map is the identity (nothing folded, or one character for one), a span is two list
    lookups instead of an ``Analysis.span`` call.
    """
    kept: dict[tuple[str, str, int, int], tuple[_Hit, int, int]] = {}
    topic_hits: list[_Hit] = []
    signal_hits: list[_Hit] = []
    if a.offsets.exact:
        starts, ends = a.starts, a.ends

        def span(first: int, last: int) -> tuple[int, int]:
            return starts[first], ends[last]
    else:
        span = a.span
    for h in hits:
        p = h.pattern
        kind = p.kind
        if kind == "signal":
            signal_hits.append(h)
            continue
        if kind == "topic":
            topic_hits.append(h)
        start, end = span(h.first, h.last)
        kept[(p.rule, p.text, start, end)] = (h, start, end)
    original = a.text
    matches = [
        _evidence(p.rule, p.kind, p.label, p.text, original[start:end], start, end, h.discounted)
        for h, start, end in kept.values()
        for p in (h.pattern,)
    ]
    return matches, topic_hits, signal_hits


def _score(
    hits: Iterable[_Hit], a: Analysis, subject_end: int, subject_weight: float
) -> dict[str, float]:
    """Counted topic weight per topic; overlapping hits of one topic count once (the heaviest)."""
    scores: dict[str, float] = {}
    taken: dict[str, set[int]] = {}  # token indexes already counted, per topic
    # the subject is the first line of the analysed text; compare in normalised offsets
    subject_end_norm = a.normalised.find("\n")
    if subject_end_norm < 0:
        subject_end_norm = len(a.normalised)
    # discounted hits never count: leaving them out before the (stable) sort keeps the
    # order of the others, and so every sum, the same
    # (-weight, first) as two stable sorts with C key functions (reverse keeps ties in
    # their order): the first is a linear pass over hits that come in token order
    ordered = sorted([h for h in hits if not h.discounted], key=_FIRST)
    ordered.sort(key=_WEIGHT, reverse=True)
    starts = a.starts
    for h in ordered:
        p = h.pattern
        topic = p.label or "other"
        covered = taken.get(topic)
        if covered is None:
            covered = taken[topic] = set()
        first, last = h.first, h.last
        if first == last:  # one token (most topic words)
            if first in covered:
                continue
            covered.add(first)
        else:
            span = range(first, last + 1)
            if not covered.isdisjoint(span):
                continue
            covered.update(span)
        weight = p.weight
        if subject_end and starts[first] < subject_end_norm:
            weight *= subject_weight
        scores[topic] = scores.get(topic, 0.0) + weight
    return scores


def _contenders(
    ranked: list[tuple[str, float]], min_score: float, margin: float
) -> list[tuple[str, float]]:
    """Topics with enough score that lie within ``margin`` of the best one."""
    if not ranked or ranked[0][1] < min_score:
        return []
    best = ranked[0][1]
    return [(t, s) for t, s in ranked if best - s < margin]


def choose_topic(ranked: list[tuple[str, float]], min_score: float, margin: float) -> str:
    """The primary topic, or "other" when there is no clear signal or a genuine tie.

    One clear signal (a score of at least ``min_score``) is enough: a mail that says
    "the senior in my club ignores me" is about bullying even if it says nothing else.
    Isolation runs through most distress mails and is usually the secondary topic, so in
    a tie with one other topic it yields to that topic (a bullied, lonely pupil goes to
    the bullying partner). A tie between two other topics stays "other": a person
    decides rather than a wrong partner.
    """
    close = _contenders(ranked, min_score, margin)
    if len(close) == 1:
        return close[0][0]
    named = [t for t, _ in close if t != "isolation"]
    if len(close) == 2 and len(named) == 1:
        return named[0]
    return "other"


def ranked_tie(ranked: list[tuple[str, float]], min_score: float, margin: float) -> bool:
    """True when several topics have enough score and none clearly leads."""
    return choose_topic(ranked, min_score, margin) == "other" and (
        len(_contenders(ranked, min_score, margin)) > 1
    )


# A crisis mail with no topic words: its only context is the writer being alone with it,
# which the labelling convention (tests/data/README.md) routes to isolation; a mail that
# is no more than a crisis word or two ("消えたい") is unclear and stays "other", and
# violence with no setting (a partner's DV) goes to the general desk ("other").
_CRISIS_DEFAULT_MIN_CHARS = 15


def _crisis_default(text: str, urgent_reasons: list[Match]) -> str:
    # Phrase rules say what the crisis is; signal combinations only back them up (a DV
    # mail's 殴る + 自分を is not self-harm), so they decide only when they stand alone.
    # Among signals alone, violence explains the marks on the body (a burn, a cut lip).
    phrases = [m for m in urgent_reasons if not m.parts]
    categories = {m.topic for m in phrases or urgent_reasons}
    if not phrases and "violence" in categories:
        categories = {"violence"}
    if not categories or categories <= {"violence"}:
        return "other"
    if len("".join(text.split())) < _CRISIS_DEFAULT_MIN_CHARS:
        return "other"
    return "isolation"


# Where a clause of foreign-language mail starts: a sentence end or a comma-like mark.
_CLAUSE_MARK = re.compile(r"[.!?;:,。！？、，；\n]")
_NEGATION_REACH = 40  # characters before a foreign match searched for its negation


def _foreign_negated(text: str, start: int, negation: re.Pattern[str]) -> bool:
    """Does a negation ([[foreign_negation]]) end right before ``start``, in its clause?

    The clause keeps "I have no money, no food" urgent (the comma ends "no money") while
    "not suicidal, promise" and "não quero morrer" are discounted.
    """
    window = text[max(0, start - _NEGATION_REACH) : start]
    marks = list(_CLAUSE_MARK.finditer(window))
    if marks:
        window = window[marks[-1].end() :]
    return negation.search(window) is not None


# Where a sentence of foreign-language mail ends (a comma does not end one: "I read in the
# news, a girl was raped" is one report).
_SENTENCE_MARK = re.compile(r"[.!?;。！？；\n]")


def _foreign_reported(
    text: str, m: re.Match[str], rule: str, exclusions: Sequence[ForeignExclusion]
) -> bool:
    """Is a foreign match someone else's event told from the news or a film?

    As exclusions.toml's "reported" discount does for Japanese (ニュースで見た): the match
    must be a word a report can tell (``ForeignExclusion.words``: raped, 跳楼, tự tử, not a
    first-person wish) and a cue (news, movie, 新闻) must come before it in the same
    sentence, with no first-person word (``ForeignExclusion.speaker``) after the cue.
    """
    found = m.group()
    sentence: str | None = None
    at = 0  # where the match starts in ``sentence``
    for ex in exclusions:
        if rule not in ex.applies_to or not any(w.search(found) for w in ex.words):
            continue
        if sentence is None:
            start = m.start()
            marks = list(_SENTENCE_MARK.finditer(text, 0, start))
            begin = marks[-1].end() if marks else 0
            after = _SENTENCE_MARK.search(text, m.end())
            sentence = text[begin : after.start() if after else len(text)]
            at = start - begin
        for cue_pattern in ex.cues:
            for cue in cue_pattern.finditer(sentence):
                # only a cue before the match introduces a report: one after it (被强奸了，
                # 看了新闻才敢说出来; raped me, it was in the news) follows the writer's own
                # event; and a first-person word after the cue makes the event the writer's
                # (…a movie about it I realised my uncle raped me)
                if cue.start() > at:
                    continue
                if not any(p.search(sentence, cue.end()) for p in ex.speaker):
                    return True
    return False


def _learned_match(
    model: Any, subject: str, text: str, analysed: str, normalised: str | None = None
) -> Match | None:
    """The learned tier's verdict as evidence: the n-grams of the mail that weighed most."""
    from intake.learned import MIN_CHARS, SHORT_CHARS, SHORT_THRESHOLD, learned_urgent, text_chars

    chars = text_chars(subject, text)
    if chars < MIN_CHARS:
        return None  # a few words are too little for n-gram statistics; rules decide those
    # short mail must pass a stricter bar (see intake.learned.SHORT_THRESHOLD)
    short = SHORT_THRESHOLD if chars < SHORT_CHARS else None
    # the analyser normalised ``analysed`` (subject, newline, text): what the model reads
    words = learned_urgent(model, subject, text, threshold=short, normalised=normalised)
    if not words:
        return None
    start = max(analysed.find(words[0]), 0)
    return Match(
        rule="learned.urgent",
        kind="urgent",
        topic="learned",
        pattern="(rules/examples.jsonl)",
        surface=" / ".join(words[:6]),
        start=start,
        end=start + len(words[0]),
    )


def classify_text(subject: str, text: str, rules: RuleSet) -> Triage:
    """Classify a subject and the resident's new words (the evaluation entry point)."""
    analysed = subject + "\n" + text
    a = get_analyser().analyse(analysed)
    hits = _find(a, rules)
    if rules.has_max_chars:
        hits = _for_length(hits, subject, text, rules.few_words_ids, rules.longest_max_chars)
    _discount(a, hits, rules)
    matches, topic_hits, signal_hits = _kept_evidence(a, hits)
    scripts = _Scripts.of(analysed)
    has_latin = scripts.latin > 0
    # the crisis emoji rules (rules.CRISIS_EMOJI): asked once, not once per emoji group
    has_crisis_emoji = any(e in analysed for e in CRISIS_EMOJI)
    language = detect_language(analysed, scripts)
    matches += _signal_matches(a, signal_hits, analysed, language, rules)
    mostly_kana = _mostly_kana(scripts, language)
    few_words = -1  # _few_words_length, measured only if a few-words foreign rule matches
    lowered: str | None = ""  # _lowered(analysed), once a group of the right script needs it
    foreign_gates = rules.foreign_gates
    for group, regex, script in rules.foreign_joined:
        if not (
            (script == "latin" and has_latin)
            or (script == "han" and not mostly_kana)
            or (script == "hangul" and scripts.hangul)
            or (script == "other" and scripts.other)
            or (script == "emoji" and has_crisis_emoji)
        ):
            # A group needs letters of its script; Han patterns (Chinese) are not run
            # over text that is plainly Japanese, where the scan costs as much as the
            # whole analysis and Japanese crisis words have their own rules.
            continue
        if lowered == "":
            lowered = _lowered(analysed)
        gates = foreign_gates.get(id(group))
        if gates is not None and not _some_may_match(analysed, lowered, gates):
            # no pattern of the group can match (a word each needs is absent): the
            # joined scan would find nothing (~140 us for the Chinese rule on a mail
            # in Latin letters, which has no Han character a pattern starts with)
            continue
        negation = rules.foreign_negations.get(script)
        for m in regex.finditer(analysed):
            fp = group[m.lastindex - 1] if m.lastindex else group[0]
            if fp.max_chars is not None:
                # help me / 救命 / 살려줘 as all the mail says (see _for_length)
                if few_words < 0:
                    few_words = _few_words_length(subject, text)
                if few_words > fp.max_chars:
                    continue
            discounted = None
            if negation is not None and _foreign_negated(analysed, m.start(), negation):
                discounted = "negated"  # no quiero morir, not suicidal, 不会自杀
            elif rules.foreign_exclusions and _foreign_reported(
                analysed, m, fp.rule, rules.foreign_exclusions
            ):
                discounted = "reported"  # I read in the news that..., 新闻说
            matches.append(
                Match(
                    fp.rule,
                    "urgent",
                    fp.category,
                    fp.text,
                    m.group(),
                    m.start(),
                    m.end(),
                    discounted,
                )
            )
    urgent_reasons = [m for m in matches if m.kind == "urgent" and m.discounted is None]
    if not urgent_reasons and rules.reading:
        # the reading tier speaks only when the phrase and signal tiers found nothing
        found = _reading_hits(a, hits, rules, subject)
        if found:
            _discount(a, found + [h for h in hits if h.pattern.kind == "exclusion"], rules)
            matches += list(
                {(m.rule, m.start, m.end): m for m in map(partial(_to_match, a), found)}.values()
            )
            urgent_reasons = [m for m in matches if m.kind == "urgent" and m.discounted is None]
    if not urgent_reasons and rules.learned is not None:
        # The learned safety net (intake.learned) speaks last and can only add urgency:
        # every phrasing of a crisis that no rule foresaw yet, learned from the examples.
        learned = _learned_match(rules.learned, subject, text, analysed, a.normalised)
        if learned is not None:
            matches.append(learned)
            urgent_reasons = [learned]
    matches.sort(key=_BY_PLACE)
    urgent_reasons.sort(key=_BY_PLACE)

    settings = rules.settings
    scores = _score(topic_hits, a, len(subject), settings.subject_weight)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], TOPICS.index(kv[0])))
    topic = "other"
    if language == "ja":
        topic = choose_topic(ranked, settings.min_score, settings.margin)
        if topic == "other" and not ranked_tie(ranked, settings.min_score, settings.margin):
            topic = _crisis_default(text, urgent_reasons)
    listed = [(t, s) for t, s in ranked if t == topic or s >= settings.secondary_min]
    return Triage(
        topic=topic,
        topics=listed,
        urgent=bool(urgent_reasons),
        urgent_reasons=urgent_reasons,
        matches=matches,
        language=language,
    )


# Parse problems that mean part of the mail could not be read (see intake.parse);
# parse-error: the parser stopped half-way, so the text triaged may be only the subject.
# charset-ambiguous: unlabelled bytes that read as well in EUC-JP (kanji) as in Shift_JIS
# (half-width kana, ｼﾆﾀｲ): the words triaged may not be the ones written (rv9a F9).
NEEDS_HUMAN_PROBLEMS = (
    "undecodable",
    "oversized",
    "mime-too-deep",
    "mime-parser-error",
    "parse-error",
    "charset-ambiguous",
    "subject:charset-ambiguous",
)


def classify(letter: Letter, rules: RuleSet) -> Triage:
    """Classify one letter. Undecodable mail goes to a person, topic "other"."""
    triage = classify_text(letter.subject, letter.text, rules)
    if any(p.startswith(NEEDS_HUMAN_PROBLEMS) for p in letter.problems):
        # We could not read all of it (undecodable, oversized, pathological MIME): a person
        # at the general desk reads it today; it may be urgent and we cannot tell.
        triage.needs_human = True
    if any(p.startswith("undecodable") for p in letter.problems):
        triage.topic = "other"  # words we could not decode must not pick a partner
    return triage


def match_dict(m: Match) -> dict[str, Any]:
    """A match as JSON-ready data: for ``classify --json`` and for what the store keeps."""
    return {
        "rule": m.rule,
        "kind": m.kind,
        "topic": m.topic,
        "pattern": m.pattern,
        "surface": m.surface,
        "start": m.start,
        "end": m.end,
        "discounted": m.discounted,
        "parts": [{"concept": c, "surface": w} for c, w in m.parts],
    }


def triage_report(triage: Triage) -> dict[str, Any]:
    """The JSON-ready pieces of ``classify --json`` (the caller adds path/acknowledge)."""
    return {
        "topic": triage.topic,
        "urgent": triage.urgent,
        "needs_human": triage.needs_human,
        "language": triage.language,
        "topics": [{"topic": t, "score": round(s, 2)} for t, s in triage.topics],
        "urgent_reasons": [match_dict(m) for m in triage.urgent_reasons],
        "matches": [match_dict(m) for m in triage.matches],
    }
