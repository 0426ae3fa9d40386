"""`service.py check`: the shipped files pass; staff mistakes are named with file:line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from intake.config import PROJECT_ROOT

CONFIG = """
[mailbox]
host = "imap.example.jp"
username = "u"
password_env = "X"

[smtp]
host = "smtp.example.jp"
from_address = "sasaean@city.kasaoka.okayama.jp"

[oncall]
to = ["oncall@example.jp"]

[service]
rules_dir = "rules"
templates_dir = "templates"
"""


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "service.py"), "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
    )


def setup(tmp_path: Path) -> Path:
    shutil.copytree(PROJECT_ROOT / "rules", tmp_path / "rules")
    shutil.copytree(PROJECT_ROOT / "templates", tmp_path / "templates")
    config = tmp_path / "intake.toml"
    config.write_text(CONFIG, encoding="utf-8")
    return config


def test_shipped_rules_partners_and_templates_pass(tmp_path: Path) -> None:
    result = check(setup(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_template_typo_is_reported_with_file_and_line(tmp_path: Path) -> None:
    config = setup(tmp_path)
    ack = tmp_path / "templates" / "resident" / "ack.txt.j2"
    lines = ack.read_text(encoding="utf-8").splitlines()
    lines.insert(3, "{% if same_day %}")  # an unclosed block
    ack.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = check(config)
    assert result.returncode == 1
    assert "ack.txt.j2:" in result.stdout


def test_undefined_template_variable_is_reported(tmp_path: Path) -> None:
    config = setup(tmp_path)
    alert = tmp_path / "templates" / "oncall" / "urgent_alert.txt.j2"
    alert.write_text(
        alert.read_text(encoding="utf-8") + "{{ case.no_such_field }}\n", encoding="utf-8"
    )
    result = check(config)
    assert result.returncode == 1
    assert "urgent_alert.txt.j2" in result.stdout and "no_such_field" in result.stdout


def test_partner_mistake_and_config_mistake_are_both_reported(tmp_path: Path) -> None:
    config = setup(tmp_path)
    partners = tmp_path / "rules" / "partners.toml"
    text = partners.read_text(encoding="utf-8").replace('days = "always"', 'days = "sometimes"')
    partners.write_text(text, encoding="utf-8")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith('days = "sometimes"'))
    result = check(config)
    assert result.returncode == 1
    assert f"partners.toml:{line}:" in result.stdout


def test_a_bad_retention_period_fails_check_naming_the_file_and_key(tmp_path: Path) -> None:
    config = setup(tmp_path)
    text = CONFIG + "\n[retention]\nkeep_days = 0\n"
    config.write_text(text, encoding="utf-8")
    result = check(config)
    assert result.returncode == 1
    line = text.splitlines().index("keep_days = 0") + 1
    assert f"{config}:{line}: retention.keep_days: must be a whole number >= 1" in result.stdout
