"""Our own text in a mail's words, second review (rv9c R1, R4, R5, R8, R9).

Each shape here was read wrongly before: our partner digest coming back raised a second
alert (R1); a resident's answer under our acknowledgement quoted with ``|`` or ``》`` was
dropped (R5); our acknowledgement re-wrapped by a phone, quoted without marks (R8) or
with ``>`` on the first piece only (R4), was read as the resident's words and picked the
topic; crisis words without hiragana after a ``-- `` line were cut as a signature (R9).
Unit tests go through ``parse`` and ``pipeline.decide`` with the shipped rules; the
digest test runs the real pipeline on Dovecot + aiosmtpd. All mails are synthetic.
"""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from intake import quotes, samples
from intake.letter import Letter
from intake.localservers import LocalDovecot, LocalSMTP
from intake.parse import parse
from intake.pipeline import Triage, decide
from intake.quotes import OWN_TEXT_MARKERS, split_quoted
from intake.reflow import columns
from intake.rules import RuleSet

ROOT = Path(__file__).resolve().parents[1]
OWN_ADDR = "sasaean@city.kasaoka.okayama.jp"
RESIDENT = "sora.test@docomo.ne.jp"
ACK_FIRST = OWN_TEXT_MARKERS[0]
JST = ZoneInfo("Asia/Tokyo")
WEDNESDAY_10 = datetime(2027, 1, 6, 10, 0, tzinfo=JST)
CRISIS = "もう死にたい。今夜やるつもりです。"


def mail(body: str, *, subject: str = "Re: 相談") -> bytes:
    """A resident's plain UTF-8 mail with ``body``."""
    subj = "=?UTF-8?B?" + base64.b64encode(subject.encode()).decode() + "?="
    head = (
        f"From: Sora <{RESIDENT}>\r\nTo: {OWN_ADDR}\r\nSubject: {subj}\r\n"
        "Date: Thu, 26 Nov 2026 22:00:00 +0900\r\nMessage-ID: <rv9c2-1@docomo.ne.jp>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode()
    return head + body.replace("\n", "\r\n").encode("utf-8")


def decided(letter: Letter, rules: RuleSet) -> Triage:
    triage, _block = decide(letter, rules, OWN_ADDR)
    return triage


def real_ack(received: str = "2027-01-06T10:00", **extra: object) -> str:
    """The shipped acknowledgement's text/plain body, rendered as the service does."""
    from tests.test_ack_text import ack_text

    return ack_text(received, **extra)


def rewrap(text: str, width: int, prefix: str = "") -> str:
    """Cut every line of ``text`` (after ``prefix``) at ``width`` columns; the rest gets
    no prefix, as Outlook and many phone mailers re-wrap quoted text."""
    out: list[str] = []
    for raw in text.split("\n"):
        line = prefix + raw
        while columns(line) > width:
            acc = 0
            cut = len(line)
            for k, ch in enumerate(line):
                acc += columns(ch)
                if acc > width:
                    cut = k
                    break
            out.append(line[:cut])
            line = line[cut:]
        out.append(line)
    return "\n".join(out)


# --- R1: our partner digest coming back -----------------------------------------------


def _digest_text() -> str:
    from intake.compose import Sender, render_digest, template_environment

    msg = render_digest(
        template_environment(ROOT / "templates"),
        sender=Sender(OWN_ADDR, "笠岡市"),
        partner=SimpleNamespace(name="NPO法人テスト", digest_to=("npo@example.jp",)),
        entries=[
            {
                "number": "C000001",
                "received": WEDNESDAY_10,
                "followup": False,
                "topic_ja": "孤立",
                "secondary": [],
                "urgent": True,
                "reasons": ["「死にたい」"],
                "ack_failed": False,
                "ack_in_doubt": False,
                "needs_human": False,
                "sender": RESIDENT,
                "phones": [],
                "text": "ひとりぼっちです。もう死にたいです。",
            }
        ],
        now=WEDNESDAY_10,
        tz=JST,
    )
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def test_the_digests_opening_line_is_an_own_text_marker() -> None:
    """Held in step with templates/partner/digest.txt.j2: the line that opens the list of
    residents' words holds a marker, so nothing from it on is read as new words."""
    text = _digest_text()
    opening = next(line for line in text.splitlines() if "件をお知らせします" in line)
    assert any(opening.startswith(marker) for marker in OWN_TEXT_MARKERS), opening


def test_our_digest_quoted_without_marks_is_not_urgent(rules: RuleSet) -> None:
    """A partner's phone answering above the digest it quotes with no mark at all."""
    letter = parse(mail("確認しました。\n\n" + _digest_text(), subject="Re: 【相談ダイジェスト】"))
    assert "死にたい" not in letter.text, letter.text
    assert not decided(letter, rules).urgent


@pytest.mark.integration
def test_our_own_digest_coming_back_raises_no_second_alert_end_to_end(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A redirect (a partner's mailbox rule, an alias in digest_to holding the mailbox)
    brings the digest back unchanged, headers and all: on-call is not alerted again."""
    from intake.config import load_settings
    from intake.digest import queue_digests
    from intake.fetch import Mailbox
    from intake.pipeline import Service, process_new_mail
    from tests.helpers import ONCALL, settled, write_config

    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    cfg = write_config(tmp_path, dovecot, smtp_server)
    words = "部活のことでずっと悩んでいて、ひとりぼっちです。もう死にたいです。"
    dovecot.append(samples.consultation(RESIDENT, "相談", words))
    svc = Service.from_settings(load_settings(cfg))
    with Mailbox(svc.settings.mailbox) as mailbox:
        process_new_mail(svc, mailbox, WEDNESDAY_10, accept_existing=True)
    svc.deliver(WEDNESDAY_10)
    queue_digests(svc, WEDNESDAY_10)
    svc.deliver(WEDNESDAY_10)
    mails = settled(smtp_server, 2.0)
    assert len([m for m in mails if ONCALL in m.rcpt_tos]) == 1
    digest = next(m for m in mails if ONCALL not in m.rcpt_tos and RESIDENT not in m.rcpt_tos)
    assert words.encode() in digest.data or b"base64" in digest.data.lower()
    dovecot.append(digest.data)
    with Mailbox(svc.settings.mailbox) as mailbox:
        process_new_mail(svc, mailbox, WEDNESDAY_10, accept_existing=True)
    svc.deliver(WEDNESDAY_10)
    mails = settled(smtp_server, 2.0)
    assert len([m for m in mails if ONCALL in m.rcpt_tos]) == 1
    # ... and it is kept for staff, not a consultation of its own in the next digest
    from sqlmodel import select

    from intake.store import StoredMessage, session_scope

    with session_scope(svc.engine) as s:
        statuses = [m.status for m in s.exec(select(StoredMessage))]
    assert sorted(statuses) == ["processed", "staff"], statuses


# --- R5: our acknowledgement quoted with another mark, answered below -------------------


@pytest.mark.parametrize("mark", ["| ", "|", "｜", "》", "≫"])
def test_an_answer_below_our_ack_quoted_with_a_bar_or_guillemet_is_read(
    rules: RuleSet, mark: str
) -> None:
    body = f"{mark}{ACK_FIRST}\n{mark}受付番号: C000001\n{mark}\n{mark}笠岡市\n\n{CRISIS}\n"
    letter = parse(mail(body))
    assert letter.text == CRISIS, letter.text
    assert decided(letter, rules).urgent


def test_an_answer_below_the_whole_ack_quoted_with_bars_under_an_attribution_is_read(
    rules: RuleSet,
) -> None:
    quoted = "\n".join("| " + line for line in real_ack().splitlines())
    body = f"2027年1月6日(水) 10:00 笠岡市 <{OWN_ADDR}>:\n{quoted}\n\n{CRISIS}\n"
    letter = parse(mail(body))
    assert letter.text == CRISIS, letter.text
    assert decided(letter, rules).urgent


def test_words_above_and_between_bar_quoted_blocks_of_our_ack_are_read() -> None:
    body = f"はい\n\n｜{ACK_FIRST}\n｜受付番号: C000001\n\nまだ続いています\n｜笠岡市\n"
    new, quoted = split_quoted(body)
    assert new == "はい\n\nまだ続いています"
    assert quoted.startswith(f"｜{ACK_FIRST}") and "｜笠岡市" in quoted


def test_a_marker_after_other_text_on_the_line_still_cuts_the_rest() -> None:
    """Not a quote prefix: an escalation's re-notice line ends with a marker."""
    body = "対応します。\n※ これは再通知（2回目）です。まだ誰も対応の確認をしていません。\n死にたい"
    assert split_quoted(body)[0] == "対応します。"


# --- R8: our acknowledgement re-wrapped by a phone and quoted without marks -------------


# From 64 columns on, our first line fits on one line (it was found before).
@pytest.mark.parametrize("width", [30, 40, 50, 62])
def test_our_ack_rewrapped_and_quoted_without_marks_is_not_the_residents(
    rules: RuleSet, width: int
) -> None:
    letter = parse(mail("ありがとうございます\n\n" + rewrap(real_ack(), width)))
    assert letter.text == "ありがとうございます", letter.text
    assert decided(letter, rules).topic == "other"


def test_a_resident_line_ending_like_our_first_words_is_not_cut() -> None:
    """Only a join that holds the whole first line counts: a resident's line that merely
    starts like it, followed by the resident's own words, stays."""
    body = "メールを受け取りました。送ってくださって\n本当に助かりました。もう死にたいです。"
    assert split_quoted(body)[0] == body


# --- R9: crisis words without hiragana after "-- " --------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "相談です\n-- \nソラ\nシニタイ",
        "相談です\n-- \n自殺未遂",
        "相談です\n-- \nソラ\n090-1234-5678\n自殺未遂",
        "Hello\n-- \nJohn\nI want to die",
    ],
)
def test_crisis_words_after_a_signature_line_are_read(rules: RuleSet, body: str) -> None:
    letter = parse(mail(body, subject="相談"))
    assert decided(letter, rules).urgent, letter.text


def test_a_signature_of_name_contacts_title_and_mailer_tag_is_still_cut() -> None:
    body = (
        "相談があります\n-- \n山田 太郎\n笠岡市立笠岡中学校 教諭\nTEL 0865-69-0000\n"
        "taro@example.jp\niPhoneから送信"
    )
    new, quoted = split_quoted(body)
    assert new == "相談があります"
    assert quoted.endswith("iPhoneから送信")


@pytest.mark.parametrize(
    "signature",
    ["笠岡市 健康推進課 自殺対策係\n0865-69-0000", "NPO法人 自殺防止センター\n山田 花子"],
)
def test_a_staff_signature_naming_a_crisis_service_is_still_cut(
    rules: RuleSet, signature: str
) -> None:
    """Guard: only a crisis word that is no office's name ends a signature; a partner's
    "確認しました。" over its signature raises no false alert."""
    letter = parse(mail(f"確認しました。\n-- \n{signature}"))
    assert letter.text == "確認しました。"
    assert not decided(letter, rules).urgent


def test_a_signature_ends_at_its_first_line_that_is_not_one() -> None:
    new, quoted = split_quoted("相談です\n-- \nソラ\nシニタイ\nタスケテ")
    assert new == "相談です\nシニタイ\nタスケテ"
    assert quoted == "-- \nソラ"


# --- R4: our acknowledgement quoted with ">" and re-wrapped without it ------------------


# Wider than 84 columns nothing of the acknowledgement is re-wrapped; narrower than 42 the
# partner and emergency lines (names and hours from partners.toml) leave fragments.
@pytest.mark.parametrize("width", list(range(42, 86, 4)))
def test_our_ack_quoted_with_gt_and_rewrapped_is_not_the_residents(
    rules: RuleSet, width: int
) -> None:
    body = f"はい、わかりました。\n\n2027年1月6日(水) 10:00 笠岡市 <{OWN_ADDR}>:\n\n" + rewrap(
        real_ack(), width, "> "
    )
    letter = parse(mail(body))
    assert letter.text == "はい、わかりました。", letter.text
    assert decided(letter, rules).topic == "other"


def test_a_residents_answer_between_rewrapped_quoted_lines_of_our_ack_stays(
    rules: RuleSet,
) -> None:
    """Only our fixed text continues a quoted line: the resident's words never do."""
    quoted = rewrap(real_ack(), 60, "> ").split("\n")
    at = next(n for n, line in enumerate(quoted) if "受付番号" in line)
    answer = ["もう限界です。消えたい。", "いじめ", "には24時間", "そのほか"]
    body = "\n".join([*quoted[: at + 1], *answer, *quoted[at + 1 :]])
    letter = parse(mail(body))
    assert letter.text == "\n".join(answer), letter.text
    assert decided(letter, rules).urgent


def test_a_resident_line_below_a_subjects_line_wrapped_at_a_comma_stays() -> None:
    body = f"> {ACK_FIRST}\n>   こんなときに: 子育てや家族の介護、\nいじめ\n> 受付番号: C000001"
    assert split_quoted(body)[0] == "いじめ"


# --- our fixed text kept in step with the templates and compose -------------------------


def test_the_acknowledgements_fixed_text_is_in_step_with_the_template() -> None:
    from intake.compose import PHONE_SUBJECTS_JA

    rendered = "\n".join(
        [
            real_ack("2027-01-06T10:00"),
            real_ack("2027-01-09T22:00"),  # a Saturday night: out of hours
            real_ack("2027-01-06T10:00", language="en"),
        ]
    )
    missing = [fixed for fixed in quotes._ACK_FIXED_TEXT if fixed not in rendered]
    assert not missing
    assert set(quotes._ACK_SUBJECTS) == set(PHONE_SUBJECTS_JA.values())
    lines = rendered.splitlines()
    for pattern, _last in quotes._ACK_LINE_PATTERNS:
        assert any(pattern.fullmatch(line) for line in lines), pattern.pattern


@pytest.mark.parametrize(
    "words", ["ｼﾆﾀｲ", "リストカット", "練炭準備完了", "硫化水素", "No Reason To Live"]
)
def test_crisis_words_cut_as_a_signature_still_alert(words: str, rules: RuleSet) -> None:
    """A line of crisis words without hiragana after "-- " and a name looks like a
    signature line; the sender wrote it, so it is checked (review rv9d F1)."""
    body = f"相談です\n-- \nソラ\n{words}\n"
    triage, _ = decide(parse(mail(body)), rules, OWN_ADDR)
    assert triage.urgent
    assert all(m.rule.startswith("signature:") for m in triage.urgent_reasons)


def test_a_staff_signature_naming_a_service_raises_no_alert(rules: RuleSet) -> None:
    """Only a resident's signature is checked: staff sign with service names."""
    from intake.pipeline import acknowledgement_block

    body = "了解しました。\n-- \n笠岡市 自殺対策係\n山田\n"
    letter = parse(mail(body))
    staff = frozenset({letter.from_addr.lower()})
    assert acknowledgement_block(letter, OWN_ADDR, staff) == "staff-address"
    triage, _ = decide(letter, rules, OWN_ADDR, staff)
    assert not triage.urgent
