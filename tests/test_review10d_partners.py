"""Review rv10d: a misspelt [[emergency]] table must not leave acknowledgements without
110/119 (it was only a warning once unknown tables stopped failing the load)."""

from pathlib import Path

import pytest

from intake.errors import RulesError
from intake.partners import load_directory

ROOT = Path(__file__).resolve().parent.parent


def test_a_misspelt_emergency_table_stops_the_load_so_the_last_good_copy_is_used(
    tmp_path: Path,
) -> None:
    text = (ROOT / "rules" / "partners.toml").read_text(encoding="utf-8")
    bad = tmp_path / "partners.toml"
    bad.write_text(text.replace("[[emergency]]", "[[emergancy]]"), encoding="utf-8")
    with pytest.raises(RulesError, match="misspelt"):
        load_directory(bad)


def test_an_unknown_table_beside_the_emergency_entries_is_only_a_warning(tmp_path: Path) -> None:
    text = (ROOT / "rules" / "partners.toml").read_text(encoding="utf-8")
    bad = tmp_path / "partners.toml"
    bad.write_text(text + '\n[[memo]]\ntext = "2026年度の連絡先"\n', encoding="utf-8")
    directory = load_directory(bad)
    assert directory.emergency and any("memo" in str(w) for w in directory.warnings)
