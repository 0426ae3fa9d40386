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
