"""The parse stage against a corpus of synthetic Japanese mails (``tests/mails/``).

Each ``.eml`` was written by ``tests/mails/make_mails.py`` from the text its (invented)
writer typed; ``expected.json`` holds that text. So every assertion here is "the decoder
gives back what the resident typed", not "what Python's naive codecs happen to produce":
NEC special characters in ISO-2022-JP, CP932's ～ under a Shift_JIS label, labels that lie,
encoded-words split inside a character, quotes of our own acknowledgement that must stay
out of the text triage reads.

One test per (mail, property), so a failure names both. ``null`` in ``expected.json``
means "not asserted"; the meaning of each key is in ``make_mails.py``'s docstring.
"""

from __future__ import annotations

import functools
import json
import runpy
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from intake.letter import Letter

CORPUS = Path(__file__).parent / "mails"
ENTRIES: list[dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))
PROBLEMS_VALUES = {"none", "some", "any"}
REQUIRED_KEYS = {"file", "subject", "first_line", "from", "bounce", "auto", "problems", "covers"}
OPTIONAL_KEYS = {
    "body_contains",
    "attachments",
    "attachments_include",
    "from_name",
    "text_excludes",
    "html_only",
    "date",
    "message_id",
}


@functools.cache
def letter_of(file: str) -> Letter:
    """Parse one fixture once. Imported here so the corpus checks run before parse exists."""
    from intake.parse import parse

    return parse((CORPUS / file).read_bytes())


def entries_with(key: str) -> list[Any]:
    """Parameters for the entries that assert ``key``; ids are the file names."""
    return [
        pytest.param(entry, id=entry["file"]) for entry in ENTRIES if entry.get(key) is not None
    ]


def first_nonblank_line(text: str) -> str:
    """First line with any non-whitespace, stripped; "" when there is none."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


# --------------------------------------------------------------------------- the corpus itself


def test_corpus_has_at_least_60_mails_and_each_has_one_entry() -> None:
    files = sorted(p.name for p in CORPUS.glob("*.eml"))
    named = [entry["file"] for entry in ENTRIES]
    assert len(files) >= 60
    assert len(named) == len(set(named)), "a file has two entries"
    assert sorted(named) == files


@pytest.mark.parametrize("entry", entries_with("file"))
def test_entry_uses_only_known_keys_and_values(entry: dict[str, Any]) -> None:
    assert entry.keys() >= REQUIRED_KEYS
    assert entry.keys() <= REQUIRED_KEYS | OPTIONAL_KEYS
    assert entry["problems"] in PROBLEMS_VALUES
    assert isinstance(entry["bounce"], bool)
    assert isinstance(entry["auto"], bool)


def test_every_mail_is_under_10_kb() -> None:
    sizes = {p.name: p.stat().st_size for p in CORPUS.glob("*.eml")}
    assert sizes
    assert {name: size for name, size in sizes.items() if size >= 10_240} == {}


def test_generator_reproduces_the_committed_files(tmp_path: Path) -> None:
    """The fixtures are exactly what make_mails.py writes, so the script documents them."""
    write_corpus = runpy.run_path(str(CORPUS / "make_mails.py"))["write_corpus"]
    written = write_corpus(tmp_path)
    assert sorted(written) == sorted(p.name for p in CORPUS.glob("*.eml"))
    for name in [*written, "expected.json"]:
        assert (tmp_path / name).read_bytes() == (CORPUS / name).read_bytes(), name


# --------------------------------------------------------------------------- the decoder


@pytest.mark.parametrize("entry", entries_with("subject"))
def test_subject_is_decoded_as_typed(entry: dict[str, Any]) -> None:
    assert letter_of(entry["file"]).subject == entry["subject"]


@pytest.mark.parametrize("entry", entries_with("first_line"))
def test_new_text_starts_with_the_writers_first_line(entry: dict[str, Any]) -> None:
    assert first_nonblank_line(letter_of(entry["file"]).text) == entry["first_line"]


@pytest.mark.parametrize("entry", entries_with("body_contains"))
def test_body_keeps_the_writers_words(entry: dict[str, Any]) -> None:
    assert entry["body_contains"] in letter_of(entry["file"]).body


@pytest.mark.parametrize("entry", entries_with("text_excludes"))
def test_quotes_signatures_and_markup_stay_out_of_the_new_text(entry: dict[str, Any]) -> None:
    text = letter_of(entry["file"]).text
    assert [s for s in entry["text_excludes"] if s in text] == []


@pytest.mark.parametrize("entry", entries_with("from"))
def test_sender_address_is_bare_with_lower_case_domain(entry: dict[str, Any]) -> None:
    assert letter_of(entry["file"]).from_addr == entry["from"]


@pytest.mark.parametrize("entry", entries_with("from_name"))
def test_sender_display_name_is_decoded(entry: dict[str, Any]) -> None:
    assert letter_of(entry["file"]).from_name == entry["from_name"]


@pytest.mark.parametrize("entry", entries_with("bounce"))
def test_delivery_reports_and_only_they_are_bounces(entry: dict[str, Any]) -> None:
    assert letter_of(entry["file"]).bounce is entry["bounce"]


@pytest.mark.parametrize("entry", entries_with("auto"))
def test_automatic_mail_is_recognised_and_human_mail_is_not(entry: dict[str, Any]) -> None:
    from intake.automatic import automatic_reason

    reason = automatic_reason(letter_of(entry["file"]))
    assert (reason is not None) is entry["auto"], reason


@pytest.mark.parametrize("entry", entries_with("attachments"))
def test_attachments_are_kept_as_named_metadata(entry: dict[str, Any]) -> None:
    names = [a.name for a in letter_of(entry["file"]).attachments]
    assert names == entry["attachments"]


@pytest.mark.parametrize("entry", entries_with("attachments_include"))
def test_attachment_inside_nested_parts_is_found(entry: dict[str, Any]) -> None:
    names = [a.name for a in letter_of(entry["file"]).attachments]
    assert [n for n in entry["attachments_include"] if n not in names] == []


@pytest.mark.parametrize(
    "entry", [p for p in entries_with("problems") if p.values[0]["problems"] != "any"]
)
def test_problems_are_recorded_for_defects_and_only_for_defects(entry: dict[str, Any]) -> None:
    problems = letter_of(entry["file"]).problems
    if entry["problems"] == "none":
        assert problems == []
    else:
        assert problems != []


@pytest.mark.parametrize("entry", entries_with("html_only"))
def test_html_only_marks_text_taken_from_html(entry: dict[str, Any]) -> None:
    assert letter_of(entry["file"]).html_only is entry["html_only"]


@pytest.mark.parametrize("entry", entries_with("date"))
def test_date_is_aware_or_none_when_missing_or_malformed(entry: dict[str, Any]) -> None:
    date = letter_of(entry["file"]).date
    if entry["date"] == "":
        assert date is None
    else:
        assert date == datetime.fromisoformat(entry["date"])
        assert date is not None and date.utcoffset() is not None


@pytest.mark.parametrize("entry", entries_with("message_id"))
def test_message_id_keeps_brackets_or_is_none(entry: dict[str, Any]) -> None:
    message_id = letter_of(entry["file"]).message_id
    assert message_id == (entry["message_id"] or None)
