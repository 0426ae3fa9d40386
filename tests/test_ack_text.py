"""The resident's acknowledgement text: what it promises, when, and to whom it speaks.

Pure rendering with the shipped templates and partner directory (no servers): the words
a frightened resident reads are the subject here (review rvx findings 2, 5 and 7).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from intake.businessdays import BusinessCalendar
from intake.compose import Sender, ack_bytes, render_ack, template_environment
from intake.partners import Directory, load_directory

ROOT = Path(__file__).resolve().parent.parent
JST = ZoneInfo("Asia/Tokyo")
DIRECTORY = load_directory(ROOT / "rules" / "partners.toml")


def jst(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=JST)


def ack_text(
    received: str,
    *,
    now: str | None = None,
    calendar: BusinessCalendar | None = None,
    directory: Directory = DIRECTORY,
    **extra: object,
) -> str:
    """The acknowledgement's text/plain body for a mail received at ``received`` (JST)."""
    msg = render_ack(
        template_environment(ROOT / "templates"),
        sender=Sender("sasaean@city.kasaoka.okayama.jp", "笠岡市"),
        to="resident@example.jp",
        case_number="C000001",
        in_reply_to=None,
        references=[],
        received=jst(received),
        calendar=calendar or BusinessCalendar(),
        directory=directory,
        now=jst(now or received),
        **extra,  # type: ignore[arg-type]
    )
    return str(msg.get_content())


def promise(text: str) -> str:
    return next(line for line in text.splitlines() if "お返事します" in line)


def test_mail_after_the_last_digest_is_promised_the_next_day_not_today() -> None:
    text = ack_text("2026-11-25 14:30")  # Wednesday, after the 14:00 digest
    assert "本日" not in text
    assert promise(text) == "11月26日(木)のお昼ごろまでに、担当の者がこのメールにお返事します。"


def test_the_same_day_promise_names_the_day_and_the_time_in_words() -> None:
    text = ack_text("2026-11-25 10:00")
    expected = "本日（11月25日）16時30分ごろまでに、担当の者がこのメールにお返事します。"
    assert promise(text) == expected


def test_a_mail_stored_after_the_digest_it_arrived_before_is_not_promised_today() -> None:
    # received 13:50, read by the service at 14:10 (a backlog): the 14:00 digest is gone
    assert "本日" not in promise(ack_text("2026-11-25 13:50", now="2026-11-25 14:10"))


def test_the_owning_partners_digest_times_decide_the_promise() -> None:
    assert "本日" in promise(ack_text("2026-11-25 10:00"))
    text = ack_text("2026-11-25 10:00", digest_times=["09:00"])
    assert promise(text).startswith("11月26日(木)のお昼ごろまでに")


@pytest.mark.parametrize("received", ["2026-11-25 07:00", "2026-11-25 18:00", "2026-11-28 11:00"])
def test_mail_outside_office_hours_says_so_in_plain_words_from_the_configured_hours(
    received: str,
) -> None:
    text = ack_text(received, calendar=BusinessCalendar(open=time(9, 0), close=time(17, 15)))
    assert (
        "受付時間（平日 9時〜17時15分）の外に届いたメールには、次の受付時間にお返事します。"
        in text.splitlines()
    )
    assert "開庁日" not in text and "夜間・休日" not in text


def test_mail_in_office_hours_after_the_last_digest_gets_no_out_of_hours_line() -> None:
    text = ack_text("2026-11-25 15:31")
    assert "受付時間（" not in text and "開庁日" not in text


@pytest.mark.parametrize("received", ["2026-11-25 10:00", "2026-11-25 22:00"])
def test_the_case_number_stands_apart_from_the_promise(received: str) -> None:
    lines = ack_text(received).splitlines()
    at = lines.index("受付番号: C000001")
    assert lines[at - 1] == "" and "お返事します" in "".join(lines[at - 3 : at])


def test_a_mail_not_in_japanese_gets_a_short_english_block_with_the_directorys_numbers() -> None:
    marked = Directory(
        tuple(
            replace(p, phone=f"0000-24H-{i}") if p.always_open else p
            for i, p in enumerate(DIRECTORY.partners)
        ),
        tuple(replace(e, phone=f"99{i}") for i, e in enumerate(DIRECTORY.emergency)),
    )
    text = ack_text("2026-11-27 20:00", directory=marked, language="en")
    lines = text.splitlines()
    assert lines[0] == "メールを受け取りました。送ってくださって、ありがとうございます。"
    english = "\n".join(lines[:8])
    assert "We received your email." in english
    assert "A staff member will reply to you (in Japanese or simple English)." in english
    # numbers from the directory, never from the template: these are markers
    assert "If you are in danger now, call 990 or 991." in english
    assert "You can call 0000-24H-2 at any time (24 hours)." in english
    assert "受付番号: C000001" in text  # the Japanese text follows in full
    assert "お電話でも相談できます。" in text


def test_the_english_block_names_110_and_119() -> None:
    text = ack_text("2026-11-25 10:00", language="und")
    assert "call 110 (police) or 119 (ambulance or fire)." in text
    assert "0865-63-0911 at any time (24 hours)" in text


def test_a_japanese_mail_gets_no_english() -> None:
    text = ack_text("2026-11-25 10:00", language="ja")
    assert "We received" not in text and "110 (police)" not in text


def test_no_internal_ids_or_raw_times_reach_the_resident() -> None:
    for received in ("2026-11-25 10:00", "2026-11-25 14:30", "2026-11-28 03:00"):
        for language in ("ja", "en"):
            text = ack_text(received, language=language)
            assert "None" not in text and "+09:00" not in text and "16:30" not in text
            assert "ja" not in text.replace("Japanese", "")


def test_the_fast_acknowledgement_bytes_equal_the_email_packages_in_english_too() -> None:
    env = template_environment(ROOT / "templates")
    values: dict[str, object] = {
        "sender": Sender("sasaean@city.kasaoka.okayama.jp", "笠岡市"),
        "to": "resident@example.jp",
        "case_number": "C000042",
        "in_reply_to": "<r1@example.jp>",
        "references": [],
        "received": jst("2026-11-25 10:00"),
        "calendar": BusinessCalendar(),
        "directory": DIRECTORY,
        "now": jst("2026-11-25 10:00"),
        "language": "en",
        "digest_times": ["09:00"],
    }
    slow = render_ack(env, **values)  # type: ignore[arg-type]
    message_id = str(slow["Message-ID"])
    got = ack_bytes(env, message_id=message_id, **values)  # type: ignore[arg-type]
    assert got == (message_id, bytes(slow))
    assert b"We received your email." in got[1] and "本日".encode() not in got[1]


def test_check_reports_a_typo_in_the_english_block(tmp_path: Path) -> None:
    from intake.check import _template_problems

    templates = tmp_path / "templates"
    for source in (ROOT / "templates").rglob("*.j2"):
        target = templates / source.relative_to(ROOT / "templates")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source.read_text("utf-8"), "utf-8")
    assert _template_problems(templates, DIRECTORY) == []
    ack = templates / "resident" / "ack.txt.j2"
    ack.write_text(
        ack.read_text("utf-8").replace("{{ emergency_en }}", "{{ emergency_english }}"), "utf-8"
    )
    problems = _template_problems(templates, DIRECTORY)
    assert problems and "emergency_english" in problems[0]


def test_each_phone_line_says_what_it_is_for() -> None:
    lines = ack_text("2026-11-25 10:00").splitlines()
    for partner, words in (
        ("city", "眠れないほどの悩みや不安"),
        ("harmony", "いじめや、友だち・家族・先生についての悩み"),
        ("genki", "子育てや家族の介護"),
    ):
        p = next(p for p in DIRECTORY.partners if p.id == partner)
        at = lines.index(f"・{p.name}")
        assert lines[at + 1].startswith("  こんなときに: ") and words in lines[at + 1]
        assert lines[at + 2] == f"  {p.phone}（{p.hours}）"
    # all three lines for every resident: the opening still names no topic
    assert "いじめ" not in "\n".join(lines[:4])
