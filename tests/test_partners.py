"""Partner directory: the shipped file is valid; mistakes are reported with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from intake.config import PROJECT_ROOT
from intake.errors import RulesError
from intake.partners import assign_partner, load_directory
from intake.triage import Triage

SHIPPED = PROJECT_ROOT / "rules" / "partners.toml"


def test_shipped_directory_matches_the_seed_table() -> None:
    d = load_directory(SHIPPED)
    phones = {p.phone for p in d.partners}
    assert {"0865-63-8515", "0865-63-4955", "0865-63-0911"} <= phones
    assert d.general_desk.phone == "0865-63-8515"
    assert [p.phone for p in d.always_open] == ["0865-63-0911"]
    assert {e.phone for e in d.emergency} == {"110", "119"}
    assert all(a.endswith("@example.jp") for p in d.partners for a in p.digest_to)


@pytest.mark.parametrize(
    ("topic", "partner"),
    [
        ("bullying", "harmony"),
        ("poverty", "genki"),
        ("caregiving", "genki"),
        ("isolation", "city"),
        ("other", "city"),
    ],
)
def test_topic_routes_to_owner(topic: str, partner: str) -> None:
    d = load_directory(SHIPPED)
    assert assign_partner(Triage(topic=topic), d).id == partner


def test_unreadable_mail_goes_to_the_general_desk() -> None:
    d = load_directory(SHIPPED)
    assert assign_partner(Triage(topic="bullying", needs_human=True), d).general_desk


def test_unknown_topic_is_reported_with_its_line(tmp_path: Path) -> None:
    text = SHIPPED.read_text(encoding="utf-8").replace(
        'topics = ["bullying"]', 'topics = ["bulying"]'
    )
    path = tmp_path / "partners.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RulesError) as err:
        load_directory(path)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if '"bulying"' in t)
    messages = [str(p) for p in err.value.problems]
    assert any(
        m.startswith(f"{path}:{line}: ") and "unknown topic 'bulying'" in m for m in messages
    )
    # the topic is now owned by nobody: that is reported too
    assert any("no partner owns topic 'bullying'" in m for m in messages)


def test_duplicate_id_and_bad_hours_are_all_reported(tmp_path: Path) -> None:
    text = SHIPPED.read_text(encoding="utf-8").replace('id = "genki"', 'id = "harmony"')
    text = text.replace('close = "17:00"', 'close = "5pm"')
    path = tmp_path / "partners.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RulesError) as err:
        load_directory(path)
    messages = " | ".join(str(p) for p in err.value.problems)
    assert "duplicate partner id 'harmony'" in messages
    assert 'close must be "HH:MM"' in messages
