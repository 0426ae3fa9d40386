"""The cheap acknowledgement bytes fall back to the email package where they would differ."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from intake.businessdays import BusinessCalendar
from intake.compose import Sender, ack_bytes, render_ack, template_environment
from intake.partners import load_directory

ROOT = Path(__file__).resolve().parent.parent
NOON = datetime(2026, 11, 26, 12, 0, tzinfo=ZoneInfo("Asia/Tokyo"))


@pytest.mark.parametrize(
    ("in_reply_to", "references"),
    [
        # found in review: two identifiers whose line runs past 78 characters are moved
        # to the next line whole by the email package
        ("<" + "a" * 18 + ">", ["<" + "b" * 38 + "@example.jp>"]),
        ("<r1@example.jp>", ["<r0@example.jp>"]),
    ],
)
def test_acknowledgement_with_references_equals_the_email_packages(
    in_reply_to: str, references: list[str]
) -> None:
    env = template_environment(ROOT / "templates")
    values = {
        "sender": Sender("sasaean@city.kasaoka.okayama.jp", "笠岡市 ささえ愛相談窓口"),
        "to": "resident@example.jp",
        "case_number": "C000042",
        "in_reply_to": in_reply_to,
        "references": references,
        "received": NOON,
        "calendar": BusinessCalendar(),
        "directory": load_directory(ROOT / "rules" / "partners.toml"),
        "now": NOON,
    }
    slow = render_ack(env, **values)  # type: ignore[arg-type]
    message_id = str(slow["Message-ID"])
    got_id, content = ack_bytes(env, message_id=message_id, **values)  # type: ignore[arg-type]
    assert (got_id, content) == (message_id, bytes(slow))


# --- evidence JSON (what a case stores as ``matches``) ---------------------------------


def _triages() -> list:
    from intake.parse import parse
    from intake.rules import load_rules
    from intake.triage import classify, classify_text

    rules = load_rules(ROOT / "rules")
    out = [
        classify(parse(path.read_bytes()), rules) for path in (ROOT / "tests/mails").glob("*.eml")
    ]
    out += [
        classify_text("相談", text, rules)
        for text in (
            # a signal combination (its parts), a negated match, an urgent one
            "親父が酒飲むと毎晩どつかれます。昨日はテーブルの角に頭ぶつけて血が出た。",
            "死にたいとは思わないけど、学校で無視されるのがつらいです。",
            "もう消えたいと思ってしまいます。バイト代が足りなくて家賃が払えません。",
        )
    ]
    return out


def test_evidence_json_is_the_text_of_dumps_of_match_dict() -> None:
    from intake.pipeline import matches_json
    from intake.store import dumps
    from intake.triage import match_dict

    triages = _triages()
    matches = [m for t in triages for m in t.matches]
    assert any(m.parts for m in matches) and any(m.discounted for m in matches)
    for triage in triages:
        assert matches_json(triage.matches) == dumps([match_dict(m) for m in triage.matches])


def test_evidence_json_follows_match_dict_when_it_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    import intake.pipeline as pipeline
    from intake.store import dumps
    from intake.triage import match_dict

    def with_a_new_key(m: object) -> dict:
        return {**match_dict(m), "tier": "phrases"}  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "match_dict", with_a_new_key)
    monkeypatch.setattr(pipeline, "_FAST_MATCHES", [])
    triage = _triages()[-1]
    assert triage.matches
    got = pipeline.matches_json(triage.matches)
    assert got == dumps([with_a_new_key(m) for m in triage.matches])
    assert '"tier": "phrases"' in got


def test_evidence_json_of_a_field_of_another_type_is_what_dumps_writes() -> None:
    from intake.pipeline import matches_json
    from intake.store import dumps
    from intake.triage import Match, match_dict

    class Offset(int):
        """An int subclass (as NumPy's integers are not): the encoder writes it as a number."""

    odd = [
        Match("r", "topic", "money", "p", "s", True, 2),  # type: ignore[arg-type]
        Match("r", "topic", "money", "p", "s", Offset(3), 4),
        Match("r", "topic", 7, "p", "s", 1, 2),  # type: ignore[arg-type]
        Match("r", "topic", ["money"], "p", "s", 1, 2),  # type: ignore[arg-type]  # unhashable
        Match("r", "topic", "money", "p", "s", 1, 2),
    ]
    assert matches_json(odd) == dumps([match_dict(m) for m in odd])
