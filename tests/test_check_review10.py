"""Review rv10a: mistakes `check` let through that lose an alert or leak a resident's data.

Templates are checked over every branch (F1), secrets are never echoed (F3), booleans must
be booleans (F4), addresses must be single usable addresses (F2), partners.toml is checked
for double owners, unknown keys and phone numbers (F6, F10, F16), ports are in range (F16).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

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


# --- F2: on-call, backup, coordinator and digest addresses are one usable address each ---

GOOD = """
[mailbox]
host = "imap.example.jp"
username = "sasaean"
password_env = "IMAP_PW"

[smtp]
host = "smtp.example.jp"
security = "starttls"
from_address = "sasaean@city.kasaoka.okayama.jp"

[oncall]
to = ["oncall@example.jp"]
backup = ["backup@example.jp"]
"""


def _problems(tmp_path: Path, text: str) -> list[str]:
    from intake.config import ConfigProblems, load_settings

    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_settings(path)
    except ConfigProblems as exc:
        return exc.problems
    return []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            'to = ["oncall@example.jp"]',
            'to = "oncall@example.jp, night@example.jp"',
            "oncall.to: one string holding several addresses",
            id="comma-string",
        ),
        pytest.param(
            'to = ["oncall@example.jp"]',
            'to = ["oncall@example.jp night@example.jp"]',
            "oncall.to: 'oncall@example.jp night@example.jp' holds a comma",
            id="space-in-entry",
        ),
        pytest.param(
            'to = ["oncall@example.jp"]',
            'to = ["oncall@example.jp;"]',
            "oncall.to: 'oncall@example.jp;' holds a comma, semicolon",
            id="semicolon",
        ),
        pytest.param(
            'to = ["oncall@example.jp"]',
            'to = ["ｏｎｃａｌｌ@example.jp"]',
            "oncall.to: 'ｏｎｃａｌｌ@example.jp' has full-width",
            id="full-width",
        ),
        pytest.param(
            'backup = ["backup@example.jp"]',
            'backup = ["backup@example"]',
            "oncall.backup: 'backup@example' has no usable domain",
            id="no-dot",
        ),
        pytest.param(
            'backup = ["backup@example.jp"]',
            'backup = ["Sasaean@City.Kasaoka.Okayama.jp"]',
            "oncall.backup: 'Sasaean@City.Kasaoka.Okayama.jp' is the service's own",
            id="own-address",
        ),
        pytest.param(
            'backup = ["backup@example.jp"]',
            'backup = ["b@example.jp"]\n\n[service]\ncoordinator = ["c@example.jp,x@example.jp"]',
            "service.coordinator: 'c@example.jp,x@example.jp' holds a comma",
            id="coordinator",
        ),
    ],
)
def test_an_unusable_oncall_address_fails_with_file_line_and_fix(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    """Each of these was accepted and lost every alert to that person (rv10a F2)."""
    text = GOOD.replace(old, new)
    key = expected.split(": ")[0].split(".")[1]
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith(f"{key} ="))
    problems = _problems(tmp_path, text)
    assert any(f":{line}: {expected}" in p for p in problems), problems


def test_good_addresses_still_pass(tmp_path: Path) -> None:
    text = GOOD.replace(
        'to = ["oncall@example.jp"]',
        'to = ["taro.oncall+night@mail.city.kasaoka.okayama.jp", "o-n@docomo.ne.jp"]',
    )
    assert _problems(tmp_path, text) == []


# --- F16: ports in range -------------------------------------------------------------


@pytest.mark.parametrize(
    ("table_line", "port", "expected"),
    [
        ("username", 99999, "mailbox.port:"),
        ("from_address", 70000, "smtp.port:"),
        ("username", 0, "mailbox.port:"),
    ],
)
def test_a_port_out_of_range_fails(
    tmp_path: Path, table_line: str, port: int, expected: str
) -> None:
    text = GOOD.replace(f"{table_line} =", f"port = {port}\n{table_line} =", 1)
    line = text.splitlines().index(f"port = {port}") + 1
    problems = _problems(tmp_path, text)
    assert any(f":{line}: {expected}" in p and "1 to 65535" in p for p in problems), problems


# --- partners.toml: F4 booleans, F6 double owners, F10 unknown keys, F16 phones, F13 ---


def _partners(tmp_path: Path, old: str, new: str) -> tuple[Path, str]:
    rules = tmp_path / "rules"
    if not rules.exists():
        shutil.copytree(PROJECT_ROOT / "rules", rules)
    path = rules / "partners.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    text = text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")
    return path, text


def _line(text: str, content: str, nth: int = 0) -> int:
    return [i for i, t in enumerate(text.splitlines(), 1) if t.strip() == content][nth]


def _partner_problems(path: Path) -> list[str]:
    """What ``check`` reports of partners.toml: the problems that stop loading, and those
    the service runs with, read the safe way (``Directory.warnings``)."""
    from intake.errors import RulesError

    try:
        return [str(p) for p in load_directory(path).warnings]
    except RulesError as exc:
        return [str(p) for p in exc.problems]


HARMONY = 'share = "excerpt"\nshow_sender = false\n\n[[partner]]\nid = "genki"'


@pytest.mark.parametrize("value", ['"false"', '"no"', "0"])
def test_show_sender_not_written_as_a_boolean_fails_at_its_line(tmp_path: Path, value: str) -> None:
    """``show_sender = "false"`` was read as true: the NPO was shown residents' addresses."""
    path, text = _partners(tmp_path, HARMONY, HARMONY.replace("false", value, 1))
    problems = _partner_problems(path)
    line = _line(text, f"show_sender = {value}")
    assert (
        f"{path}:{line}: partner 'harmony': show_sender must be true or false, without quotes"
        in problems
    ), problems


def test_general_desk_written_as_a_string_fails_at_its_line(tmp_path: Path) -> None:
    path, text = _partners(tmp_path, "\ngeneral_desk = true", '\ngeneral_desk = "true"')
    problems = _partner_problems(path)
    line = _line(text, 'general_desk = "true"')
    assert problems == [
        f"{path}:{line}: partner 'city': general_desk must be true or false, without quotes"
    ]


def test_a_topic_owned_by_two_partners_fails_naming_both(tmp_path: Path) -> None:
    old = 'topics = ["poverty", "caregiving", "volunteer"]'
    path, text = _partners(tmp_path, old, old.replace('"]', '", "bullying"]'))
    first = _line(text, 'topics = ["bullying"]')
    second = _line(text, 'topics = ["poverty", "caregiving", "volunteer", "bullying"]')
    assert _partner_problems(path) == [
        f"{path}:{second}: partner 'genki': topic 'bullying' is also owned by 'harmony' "
        f"(line {first}); keep it in one partner's topics (use also_notify for a copy)"
    ]


@pytest.mark.parametrize(
    ("old", "new", "key", "hint"),
    [
        (
            '# also_notify = ["isolation"]',
            'also_notfy = ["isolation"]',
            "also_notfy",
            "also_notify",
        ),
        ('\ndays = "always"', '\nday = "always"', "day", "days"),
        ('close = "17:00"', 'closes = "17:00"', "closes", "close"),
        ('phone = "119"', 'phone = "119"\nphon = "119"', "phon", "phone"),
    ],
)
def test_a_misspelt_partner_or_emergency_key_fails_with_the_nearest_name(
    tmp_path: Path, old: str, new: str, key: str, hint: str
) -> None:
    path, text = _partners(tmp_path, old, new)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith(f"{key} ="))
    problems = _partner_problems(path)
    assert any(
        p.startswith(f"{path}:{line}: ")
        and f"unknown key {key!r}" in p
        and f"did you mean {hint}?" in p
        for p in problems
    ), problems


def test_a_misspelt_table_fails(tmp_path: Path) -> None:
    path, text = _partners(tmp_path, "[[emergency]]", "[[emergencies]]")
    line = _line(text, "[[emergencies]]")
    assert any(
        p.startswith(
            f"{path}:{line}: unknown table or key 'emergencies'; did you mean [[emergency]]?"
        )
        for p in _partner_problems(path)
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('phone = "0865-63-0911"', 'phone = "0865-63-091"'),
        ('phone = "0865-63-0911"', 'phone = "0865-63-0911-11"'),
        ('phone = "0865-63-4955"', 'phone = "０８６５-６３-４９５５"'),
        ('phone = "0865-63-4955"', 'phone = "0865(63)4955"'),
        ('phone = "0865-63-8515"', 'phone = "1865-63-8515"'),
        ('phone = "110"', 'phone = "11"'),
        ('phone = "119"', 'phone = "1190"'),
    ],
)
def test_a_phone_number_residents_could_not_dial_fails_at_its_line(
    tmp_path: Path, old: str, new: str
) -> None:
    path, text = _partners(tmp_path, old, new)
    line = _line(text, new)
    problems = _partner_problems(path)
    assert any(p.startswith(f"{path}:{line}: ") and "phone" in p for p in problems), problems


@pytest.mark.parametrize(
    "phone", ["0120-000-000", "0570-000-000", "090-1234-5678", "08656385150", "189", "#7119"]
)
def test_real_kinds_of_japanese_numbers_pass(tmp_path: Path, phone: str) -> None:
    path, _ = _partners(tmp_path, 'phone = "0865-63-4955"', f'phone = "{phone}"')
    assert _partner_problems(path) == []


def test_a_problem_in_the_second_emergency_entry_points_at_it(tmp_path: Path) -> None:
    path, text = _partners(tmp_path, 'phone = "119"', 'phone = ""')
    line = _line(text, "[[emergency]]", 1)
    assert f"{path}:{line}: each [[emergency]] needs name and phone" in _partner_problems(path)


def test_a_digest_address_with_two_addresses_fails(tmp_path: Path) -> None:
    old = 'digest_to = ["harmony-digest@example.jp"]'
    path, text = _partners(tmp_path, old, 'digest_to = ["harmony-digest@example.jp, b@example.jp"]')
    line = _line(text, 'digest_to = ["harmony-digest@example.jp, b@example.jp"]')
    assert any(
        p.startswith(f"{path}:{line}: partner 'harmony': digest_to") and "holds a comma" in p
        for p in _partner_problems(path)
    )


def test_check_fails_on_show_sender_in_quotes(tmp_path: Path) -> None:
    """End to end: the contractor's `check` exits 1 naming the line."""
    config = setup(tmp_path)
    _, text = _partners(tmp_path, HARMONY, HARMONY.replace("false", '"false"', 1))
    result = check(config)
    assert result.returncode == 1
    line = _line(text, 'show_sender = "false"')
    assert f"partners.toml:{line}: partner 'harmony': show_sender must be true or false" in (
        result.stdout
    )


# --- F13: every problem at the right line ----------------------------------------------


def test_a_duplicate_partner_id_is_the_only_problem_named(tmp_path: Path) -> None:
    """Its topics were reported as owned by nobody, sending staff to move topics."""
    path, text = _partners(tmp_path, 'id = "genki"', 'id = "harmony"')
    first, second = (i for i, t in enumerate(text.splitlines(), 1) if t == 'id = "harmony"')
    assert _partner_problems(path) == [
        f"{path}:{second}: duplicate partner id 'harmony'; the first is at line {first - 1}"
    ]


def test_a_missing_password_file_is_named_at_its_line(tmp_path: Path) -> None:
    config = setup(tmp_path)
    text = config.read_text(encoding="utf-8").replace(
        'password_env = "X"', 'password_file = "secrets/imap"'
    )
    config.write_text(text, encoding="utf-8")
    line = text.splitlines().index('password_file = "secrets/imap"') + 1
    result = check(config)
    assert f"{config}:{line}: mailbox.password_file: " in result.stdout, result.stdout


def test_last_good_rules_inside_the_rules_folder_is_named_at_its_line(tmp_path: Path) -> None:
    from intake.check import run_checks

    config = setup(tmp_path)
    text = config.read_text(encoding="utf-8") + 'last_good_rules_dir = "rules/kept"\n'
    config.write_text(text, encoding="utf-8")
    line = text.splitlines().index('last_good_rules_dir = "rules/kept"') + 1
    (problem,) = run_checks(config)
    assert problem.startswith(f"{config}:{line}: service.last_good_rules_dir:"), problem


def test_a_config_boolean_in_quotes_fails_with_the_fix(tmp_path: Path) -> None:
    text = GOOD.replace('password_env = "IMAP_PW"', 'password_env = "IMAP_PW"\nidle = "false"')
    line = text.splitlines().index('idle = "false"') + 1
    problems = _problems(tmp_path, text)
    assert any(
        f":{line}: mailbox.idle: must be true or false, without quotes" in p for p in problems
    ), problems


def test_the_worker_can_ask_for_the_template_problems_at_start(tmp_path: Path) -> None:
    """The public entry for start-up (run/once) reports what check reports."""
    from intake.check import template_problems

    templates, _ = _templates_with(tmp_path, ALERT, "（{{ escalation }}回目）", "（{{ n }}回目）")
    directory = load_directory(PROJECT_ROOT / "rules" / "partners.toml")
    (problem,) = template_problems(templates, directory)
    assert problem.startswith(f"{templates / ALERT}:") and "re-notice 1" in problem


def test_a_partners_file_the_previous_version_accepted_still_loads_after_an_upgrade(
    tmp_path: Path,
) -> None:
    """Review rv10c R1: a note key (memo), a quoted flag, a topic listed twice or a phone
    with a note made the new loader refuse partners.toml, and the last good copy (the same
    file) too: the worker stopped, reading no mail. It now loads, read the safe way, and
    ``check`` still names each problem."""
    path, _text = _partners(tmp_path, HARMONY, HARMONY.replace("false", '"false"', 1))
    text = path.read_text(encoding="utf-8")
    text = text.replace('id = "genki"', 'id = "genki"\nmemo = "2025年度から参加"', 1)
    path.write_text(text, encoding="utf-8")
    directory = load_directory(path)
    harmony = directory.get("harmony")
    assert harmony is not None and harmony.show_sender is False  # the private reading
    assert directory.get("genki") is not None
    problems = [str(p) for p in directory.warnings]
    assert any("memo" in p for p in problems) and any("show_sender" in p for p in problems)


def test_the_worker_starts_with_such_a_file_and_logs_each_problem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from intake.config import load_settings
    from intake.pipeline import Service
    from tests.helpers import write_config

    path, _text = _partners(tmp_path, HARMONY, HARMONY.replace("false", '"false"', 1))
    imap = SimpleNamespace(host="127.0.0.1", port=1, user="intake")
    smtp = SimpleNamespace(host="127.0.0.1", port=1)
    extra = f'\n[service]\nrules_dir = "{path.parent}"\n'
    config = write_config(tmp_path, imap, smtp, extra=extra)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        svc = Service.from_settings(load_settings(config), last_good=True)
    try:
        assert svc.directory.get("harmony") is not None
        assert any("partners.toml problem" in r.getMessage() for r in caplog.records)
    finally:
        svc.close()
