"""Review rv10a: mistakes `check` let through that lose an alert or leak a resident's data.

Templates are checked over every branch (F1), secrets are never echoed (F3), booleans must
be booleans (F4), addresses must be single usable addresses (F2), partners.toml is checked
for double owners, unknown keys and phone numbers (F6, F10, F16), ports are in range (F16).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from intake.check import _template_problems
from intake.config import PROJECT_ROOT
from intake.partners import load_directory
from tests.test_check import check, setup

ALERT = Path("oncall") / "urgent_alert.txt.j2"
DIGEST = Path("partner") / "digest.txt.j2"
DIGEST_HTML = Path("partner") / "digest.html.j2"
ACK = Path("resident") / "ack.txt.j2"


def _templates_with(tmp_path: Path, name: Path, old: str, new: str) -> tuple[Path, int]:
    """A copy of the shipped templates with ``old`` replaced by ``new`` in ``name``;
    returns the folder and the line of the change."""
    templates = tmp_path / "templates"
    if not templates.exists():
        shutil.copytree(PROJECT_ROOT / "templates", templates)
    path = templates / name
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    line = text[: text.index(old)].count("\n") + 1
    return templates, line


# Each is a mistake in a branch the old check (one 10:00 office-hours sample) never
# rendered: at night it stopped the alert itself, the quarantine alert and escalations.
BRANCH_TYPOS = [
    pytest.param(ALERT, "（{{ escalation }}回目）", "（{{ escalation_no }}回目）", id="re-notice"),
    pytest.param(
        ALERT,
        "（本文に電話番号はありません）。",
        "（本文に電話番号はありません）{{ case.sendr }}。",
        id="no-phone",
    ),
    pytest.param(
        ALERT,
        "できるだけ早く（遅くとも {{ due | day_ja }} {{ hm(due) }}）",
        "できるだけ早く（遅くとも {{ due | day_ja }} {{ hm(case.due_tim) }}）",
        id="night",
    ),
    pytest.param(
        ALERT,
        "（期限の {{ due | day_ja }} {{ hm(due) }} を過ぎています）",
        "（期限の {{ due | day_ja }} {{ hm(case.duee) }} を過ぎています）",
        id="overdue",
    ),
    pytest.param(
        ALERT,
        "すぐに内容を確認し、相談者に連絡してください。",
        "すぐに内容を確認し、相談者に連絡してください。{{ case.no_sender_hint }}",
        id="no-sender",
    ),
    pytest.param(
        ALERT,
        "python service.py show {{ case.number }}",
        "python service.py show {{ case.numbr }}",
        id="quarantined",
    ),
    pytest.param(
        ALERT,
        "相談者への自動返信は送っていません。",
        "相談者への自動返信は送っていません。{{ automatic_kind }}",
        id="automatic",
    ),
    pytest.param(
        ALERT,
        "・（読み取れないメールのため、内容の確認が必要です）",
        "・（{{ case.unread }}）",
        id="no-reasons",
    ),
    pytest.param(
        DIGEST,
        "電話など別の方法で相談者に連絡してください。",
        "電話など別の方法で相談者に連絡してください。{{ e.phone_numbers }}",
        id="digest-ack-failed-shown",
    ),
    pytest.param(
        DIGEST,
        "この相談の担当は{{ e.owner }}です。",
        "この相談の担当は{{ e.ownr }}です。",
        id="digest-owner",
    ),
    pytest.param(
        DIGEST,
        "{{ e.desk_name }}（電話 {{ e.desk_phone }}）",
        "{{ e.desk_name }}（電話 {{ e.desk_tel }}）",
        id="digest-desk",
    ),
    pytest.param(DIGEST, "送信者: {{ e.sender }}", "送信者: {{ e.sendr }}", id="digest-sender"),
    pytest.param(
        DIGEST,
        "本日中に内容を確認してください。",
        "本日中に内容を確認してください。{{ e.due }}",
        id="digest-needs-human",
    ),
    pytest.param(
        DIGEST,
        "自動返信が届いたか確認できません。",
        "自動返信が届いたか確認できません。{{ e.when }}",
        id="digest-in-doubt",
    ),
    pytest.param(
        DIGEST_HTML,
        "{% if e.phones %} / 電話: {{ e.phones",
        "{% if e.phones %} / 電話: {{ e.phone_list",
        id="digest-html-phones",
    ),
    pytest.param(
        ACK,
        "You can call {{ always_open",
        "You can call {{ always_open_lines",
        id="ack-english-24h",
    ),
    pytest.param(
        ACK,
        "受付時間（平日 {{ office_hours }}）の外に",
        "受付時間（平日 {{ office_hour }}）の外に",
        id="ack-out-of-hours",
    ),
]


@pytest.mark.parametrize(("name", "old", "new"), BRANCH_TYPOS)
def test_a_mistake_in_any_template_branch_is_reported_with_file_and_line(
    tmp_path: Path, name: Path, old: str, new: str
) -> None:
    templates, line = _templates_with(tmp_path, name, old, new)
    directory = load_directory(PROJECT_ROOT / "rules" / "partners.toml")
    problems = _template_problems(templates, directory)
    here = f"{templates / name}:{line}: UndefinedError"
    called = f"called from line {line})"  # a value passed to a macro fails inside it
    assert any(p.startswith(here) or called in p for p in problems), problems


def test_the_shipped_templates_pass_every_branch() -> None:
    directory = load_directory(PROJECT_ROOT / "rules" / "partners.toml")
    assert _template_problems(PROJECT_ROOT / "templates", directory) == []


def test_check_fails_on_a_night_only_alert_mistake_and_names_the_sample(tmp_path: Path) -> None:
    """End to end, as the contractor runs it: the night deadline line of the alert."""
    config = setup(tmp_path)
    templates = tmp_path / "templates"
    path = templates / ALERT
    text = path.read_text(encoding="utf-8")
    old = "できるだけ早く（遅くとも {{ due | day_ja }} {{ hm(due) }}）"
    line = text[: text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, old.replace("hm(due)", "hm(case.due_tim)")), "utf-8")
    result = check(config)
    assert result.returncode == 1, result.stdout
    assert f"{path}:" in result.stdout and "'due_tim'" in result.stdout
    assert f"(in a macro called from line {line})" in result.stdout
    assert "night" in result.stdout


# --- F3: the password written where its variable's name goes is never printed ----------


@pytest.mark.parametrize("password", ["Kasaoka#2026pw", "kasaoka 2026", "2026kasaoka"])
def test_a_password_in_password_env_fails_check_without_being_printed(
    tmp_path: Path, password: str
) -> None:
    config = setup(tmp_path)
    text = config.read_text(encoding="utf-8").replace(
        'password_env = "X"', f'password_env = "{password}"'
    )
    config.write_text(text, encoding="utf-8")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("password_env"))
    result = check(config)
    assert result.returncode == 1, result.stdout
    assert f"{config}:{line}: mailbox.password_env: is not the name of an environment" in (
        result.stdout
    )
    assert password not in result.stdout + result.stderr


def test_run_with_a_password_in_password_env_does_not_print_it(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    config = setup(tmp_path)
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace('password_env = "X"', 'password_env = "Kasaoka#2026pw"'), "utf-8"
    )
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "service.py"), "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
        env={k: v for k, v in os.environ.items() if k != "INTAKE_CONFIG"},
    )
    assert result.returncode != 0
    assert "mailbox.password_env" in result.stdout + result.stderr
    assert "Kasaoka#2026pw" not in result.stdout + result.stderr


def test_a_legal_but_password_like_variable_name_that_is_not_set_is_not_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Kasaoka2026pw`` is a legal name, so not refused; but not set and not written as
    variables are, it may be the password: neither check's warning nor the error at
    connection time prints it, and ``repr`` does not either."""
    import logging

    from intake.check import run_checks
    from intake.config import Secret
    from intake.errors import ConfigError

    config = setup(tmp_path)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('password_env = "X"', 'password_env = "Kasaoka2026pw"'), "utf-8")
    monkeypatch.delenv("Kasaoka2026pw", raising=False)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("intake").addHandler(handler)
    try:
        assert run_checks(config) == []
    finally:
        logging.getLogger("intake").removeHandler(handler)
    shown = [r.getMessage() for r in records if "password_env" in r.getMessage()]
    assert shown and not any("Kasaoka2026pw" in m for m in shown), shown
    secret = Secret(env="Kasaoka2026pw", key="smtp.password_env")
    with pytest.raises(ConfigError) as raised:
        secret.get()
    assert "smtp.password_env" in str(raised.value)
    assert "Kasaoka2026pw" not in str(raised.value) + repr(secret)
