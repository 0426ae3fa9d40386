"""A typo in rules/ no longer stops the worker: it runs with the last rules that loaded.

The integration tests run ``service.py`` as systemd would, against a real Dovecot and a
real SMTP server; all mail is synthetic.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from intake import last_good_rules, samples
from intake.config import PROJECT_ROOT, Settings, load_settings
from intake.localservers import LocalDovecot, LocalSMTP, ReceivedMail
from intake.prepare_pool import rules_fingerprint
from tests.helpers import ONCALL, settled, spawn_logged, write_config

ROOT = Path(__file__).resolve().parents[1]
BROKEN = '\n[[rule]\nid = "topic.broken"\n'  # a missing "]": not valid TOML


def copy_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(PROJECT_ROOT / "rules", rules)
    return rules


def break_topics(rules: Path) -> int:
    """Add a syntax error to topics.toml; returns the line the loader reports."""
    topics = rules / "topics.toml"
    before = topics.read_text(encoding="utf-8")
    topics.write_text(before + BROKEN, encoding="utf-8")
    return before.count("\n") + 2  # the "[[rule]" line


def offline_config(tmp_path: Path, extra: str = "") -> Path:
    """A config whose mail servers are never reached (port 1)."""
    imap = SimpleNamespace(host="127.0.0.1", port=1, user="intake")
    smtp = SimpleNamespace(host="127.0.0.1", port=1)
    return write_config(tmp_path, imap, smtp, extra=extra)  # type: ignore[arg-type]


def run_service(
    *args: str, config: Path, password: str = "x", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TEST_IMAP_PASSWORD": password}
    return subprocess.run(
        [sys.executable, str(ROOT / "service.py"), *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def text_of(mail: ReceivedMail) -> str:
    msg: EmailMessage = mail.message
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def notices(mails: list[ReceivedMail]) -> list[ReceivedMail]:
    return [m for m in mails if m.message["X-Soudan-Intake"] == last_good_rules.NOTICE_KIND]


@pytest.mark.integration
def test_once_with_a_typo_in_the_rules_still_reads_alerts_and_tells_staff_once_a_day(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP
) -> None:
    rules = copy_rules(tmp_path)
    config = write_config(
        tmp_path, dovecot, smtp_server, extra=f'\n[service]\nrules_dir = "{rules}"\n'
    )
    first = run_service("once", config=config, password=dovecot.password)
    assert first.returncode == 0, first.stderr
    assert (last_good_rules.snapshot_root(load_settings(config)) / "current").is_symlink()

    line = break_topics(rules)
    dovecot.append(
        samples.consultation(
            "resident.test@example.jp",
            "相談",
            "もう死にたいです。今夜、橋から飛び降りようと思っています。",
        )
    )
    second = run_service("once", config=config, password=dovecot.password)
    assert second.returncode == 0, second.stderr
    assert "cases 1" in second.stdout and "alerts queued 1" in second.stdout, second.stdout
    assert f"topics.toml:{line}: " in second.stderr
    assert "running with the last rules that loaded" in second.stderr
    mails = smtp_server.wait_for(3, timeout=30)
    alerts = [m for m in mails if m.message["X-Soudan-Intake"] == "alert"]
    assert len(alerts) == 1 and alerts[0].rcpt_tos == [ONCALL]
    assert [m.rcpt_tos for m in mails if "resident.test@example.jp" in m.rcpt_tos] == [
        ["resident.test@example.jp"]
    ]
    (notice,) = notices(mails)
    assert notice.rcpt_tos == [ONCALL]
    text = text_of(notice)
    assert f"topics.toml {line}行目" in text
    # the exact command: the service's Python, its service.py, its config (rv10a F12)
    assert f"service.py check --config {config}" in text
    assert sys.executable in text
    assert "死にたい" not in text and "resident.test" not in text  # no mail content

    # A restart the same day (a restart loop under systemd) tells nobody again.
    third = run_service("once", config=config, password=dovecot.password)
    assert third.returncode == 0, third.stderr
    assert f"topics.toml:{line}: " in third.stderr
    assert len(notices(settled(smtp_server, 2.0))) == 1


@pytest.mark.integration
def test_run_with_a_typo_in_the_rules_keeps_alerting(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP
) -> None:
    """The worker restarted at night after a broken edit: it starts, alerts, tells staff."""
    import signal

    rules = copy_rules(tmp_path)
    config = write_config(
        tmp_path, dovecot, smtp_server, extra=f'\n[service]\nrules_dir = "{rules}"\n'
    )
    assert run_service("once", config=config, password=dovecot.password).returncode == 0
    line = break_topics(rules)
    log = tmp_path / "worker.log"
    worker = spawn_logged(
        [sys.executable, str(ROOT / "service.py"), "run", "--config", str(config)],
        log,
        cwd=ROOT,
        env={**os.environ, "TEST_IMAP_PASSWORD": dovecot.password},
    )
    try:
        dovecot.append(
            samples.consultation(
                "night.test@example.jp", "相談", "もう死にたい。今から飛び降りる。"
            )
        )
        mails = smtp_server.wait_for(3, timeout=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
            raise
    stderr = log.read_text("utf-8", "replace")
    assert worker.returncode == 0, stderr
    assert [m.rcpt_tos for m in mails if m.message["X-Soudan-Intake"] == "alert"] == [[ONCALL]]
    assert len(notices(mails)) == 1
    assert f"topics.toml:{line}: " in stderr


@pytest.mark.parametrize("command", ["once", "run"])
def test_first_install_with_broken_rules_refuses_to_start(tmp_path: Path, command: str) -> None:
    rules = copy_rules(tmp_path)
    line = break_topics(rules)
    config = offline_config(tmp_path, extra=f'\n[service]\nrules_dir = "{rules}"\n')
    result = run_service(command, config=config, timeout=90)
    assert result.returncode == 1, result.stderr
    assert f"topics.toml:{line}: " in result.stderr
    assert not (tmp_path / last_good_rules.ROOT_NAME).exists()


def _settings(tmp_path: Path, mailbox: str = "kasaoka", extra: str = "") -> Settings:
    rules = tmp_path / "rules"
    if not rules.exists():
        copy_rules(tmp_path)
    path = offline_config(tmp_path, extra=f'\n[service]\nrules_dir = "{rules}"\n{extra}')
    text = path.read_text(encoding="utf-8").replace("[mailbox]\n", f'[mailbox]\nid = "{mailbox}"\n')
    path.write_text(text, encoding="utf-8")
    return load_settings(path)


def test_snapshot_is_private_and_not_rewritten_when_unchanged(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    fingerprint = rules_fingerprint(settings.rules_dir)
    assert last_good_rules.save(settings, fingerprint)
    root = last_good_rules.snapshot_root(settings)
    assert root.parent == tmp_path / last_good_rules.ROOT_NAME  # beside the SQLite file
    snapshot = last_good_rules.find(settings)
    assert snapshot is not None and snapshot.fingerprint == fingerprint
    for folder in (root.parent, root, snapshot.path):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    files = sorted(p.name for p in snapshot.path.iterdir())
    assert files == sorted(
        [last_good_rules.MANIFEST, *(p.name for p in settings.rules_dir.iterdir())]
    )
    for file in snapshot.path.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    written = {p: p.stat().st_mtime_ns for p in snapshot.path.iterdir()}

    assert not last_good_rules.save(settings, fingerprint)  # the same rules: no write
    assert last_good_rules.find(settings) == snapshot
    assert {p: p.stat().st_mtime_ns for p in snapshot.path.iterdir()} == written

    topics = settings.rules_dir / "topics.toml"
    topics.write_bytes(topics.read_bytes() + b"\n# edited by staff\n")
    assert last_good_rules.save(settings, rules_fingerprint(settings.rules_dir))
    newer = last_good_rules.find(settings)
    assert newer is not None and newer.path != snapshot.path
    assert (newer.path / "topics.toml").read_bytes() == topics.read_bytes()


def test_rules_edited_while_loading_are_not_saved(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    fingerprint = rules_fingerprint(settings.rules_dir)
    topics = settings.rules_dir / "topics.toml"
    topics.write_bytes(topics.read_bytes() + b"\n# edited meanwhile\n")
    assert not last_good_rules.save(settings, fingerprint)
    assert last_good_rules.find(settings) is None


def test_snapshot_of_another_mailbox_is_never_used(tmp_path: Path) -> None:
    ours = _settings(tmp_path, "kasaoka")
    theirs = _settings(tmp_path, "ibara")  # same database folder, same rules folder
    assert last_good_rules.save(ours, rules_fingerprint(ours.rules_dir))
    assert last_good_rules.find(ours) is not None
    assert last_good_rules.find(theirs) is None
    # Even a copy moved into the other mailbox's folder names its own mailbox.
    shutil.copytree(
        last_good_rules.snapshot_root(ours), last_good_rules.snapshot_root(theirs), symlinks=True
    )
    assert last_good_rules.find(theirs) is None


def test_damaged_or_shared_snapshot_is_not_used(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert last_good_rules.save(settings, rules_fingerprint(settings.rules_dir))
    snapshot = last_good_rules.find(settings)
    assert snapshot is not None
    root = last_good_rules.snapshot_root(settings)
    root.chmod(0o777)  # another local user could plant rules there
    assert last_good_rules.find(settings) is None
    root.chmod(0o700)
    urgent = snapshot.path / "urgent.toml"
    urgent.write_bytes(urgent.read_bytes().replace(b"\n", b"\n#", 3))
    assert last_good_rules.find(settings) is None


def test_configured_folder_is_used_and_check_accepts_it(tmp_path: Path) -> None:
    from intake.check import run_checks

    elsewhere = tmp_path / "kept"
    settings = _settings(tmp_path, extra=f'last_good_rules_dir = "{elsewhere}"\n')
    assert last_good_rules.snapshot_root(settings).parent == elsewhere
    assert run_checks(settings.path) == []
    inside = _settings(tmp_path, extra=f'last_good_rules_dir = "{settings.rules_dir}/kept"\n')
    (problem,) = run_checks(inside.path)
    assert "last_good_rules_dir" in problem and "inside the rules folder" in problem


def test_postgres_without_the_key_keeps_the_snapshot_in_the_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    monkeypatch.setenv("SOUDAN_INTAKE_CACHE_DIR", str(tmp_path / "cache"))
    settings = replace(
        _settings(tmp_path), database_url="postgresql+psycopg://intake@db.example.jp/intake"
    )
    assert last_good_rules.snapshot_root(settings).parent == (
        tmp_path / "cache" / last_good_rules.ROOT_NAME
    )


def test_fallback_service_uses_the_saved_rules_pool_and_cached_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's children load the copy the worker runs with, and the learned tier comes
    from its cache (keyed by the examples' bytes): nothing is retrained."""
    from intake import learned
    from intake.pipeline import Service, _attempt

    settings = _settings(tmp_path, extra="prepare_processes = 1\n")
    svc = Service.from_settings(settings, last_good=True)
    assert svc.rules_fallback is None
    svc.close()
    break_topics(settings.rules_dir)

    def no_training(*args: Any) -> Any:
        raise AssertionError("the learned tier was retrained")

    monkeypatch.setattr(learned, "_MEMO", {})
    monkeypatch.setattr(learned, "train_in_child", no_training)
    svc = Service.from_settings(settings, last_good=True)
    try:
        assert svc.rules_fallback is not None
        assert svc.rules.learned is not None
        snapshot = svc.rules_fallback.snapshot
        assert svc.pool is not None and svc.pool.rules_dir == snapshot.path
        raws = [p.read_bytes() for p in sorted((ROOT / "tests" / "mails").glob("*.eml"))][:8]
        here: list[bytes] = []

        def local(raw: bytes) -> Any:
            here.append(raw)
            return _attempt(svc, raw)

        result = svc.pool.prepare(raws, local, steal=False)
        assert here == [] and not svc.pool.disabled  # all done by the child, none refused
        assert result == [_attempt(svc, raw) for raw in raws]
    finally:
        svc.close()

    # Other commands (digest, staff commands) keep refusing broken rules.
    from intake.errors import RulesError

    with pytest.raises(RulesError):
        Service.from_settings(settings)


def test_older_copies_are_removed_once_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One copy per mailbox stays: a folder that is edited often does not fill the disk."""
    monkeypatch.setattr(last_good_rules, "PRUNE_AFTER", -1.0)
    settings = _settings(tmp_path)
    assert last_good_rules.save(settings, rules_fingerprint(settings.rules_dir))
    old = last_good_rules.find(settings)
    topics = settings.rules_dir / "topics.toml"
    topics.write_bytes(topics.read_bytes() + b"\n# edited by staff\n")
    assert last_good_rules.save(settings, rules_fingerprint(settings.rules_dir))
    new = last_good_rules.find(settings)
    assert old is not None and new is not None and not old.path.exists()
    root = last_good_rules.snapshot_root(settings)
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [last_good_rules.CURRENT, new.path.name]
    )


@pytest.mark.integration
def test_show_still_opens_a_case_at_night_with_a_typo_in_the_rules(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP
) -> None:
    """The night alert tells the on-call person to run ``show CASE``; with a typo in the
    rules it refused (rules problem) while the worker kept running on the saved copy.
    It uses the copy too, says so in Japanese, and saves or sends nothing."""
    rules = copy_rules(tmp_path)
    config = write_config(
        tmp_path, dovecot, smtp_server, extra=f'\n[service]\nrules_dir = "{rules}"\n'
    )
    dovecot.append(samples.consultation("resident.test@example.jp", "相談", "寂しいです"))
    first = run_service("once", config=config, password=dovecot.password)
    assert first.returncode == 0, first.stderr
    break_topics(rules)
    root = last_good_rules.snapshot_root(load_settings(config))
    saved = sorted(p.name for p in root.iterdir())

    shown = run_service("show", "C000001", config=config)
    assert shown.returncode == 0, shown.stderr
    assert "C000001" in shown.stdout
    assert "前回正しく読み込めたルール" in shown.stderr
    listed = run_service("cases", config=config)
    assert listed.returncode == 0 and "C000001" in listed.stdout, listed.stderr
    assert sorted(p.name for p in root.iterdir()) == saved  # nothing saved
    assert not notices(settled(smtp_server, 1.0))  # nothing sent


def test_show_with_broken_rules_and_no_saved_copy_still_refuses(tmp_path: Path) -> None:
    rules = copy_rules(tmp_path)
    break_topics(rules)
    config = offline_config(tmp_path, extra=f'\n[service]\nrules_dir = "{rules}"\n')
    (tmp_path / "intake.db").touch()  # the database exists; only the rules are broken
    result = run_service("show", "C000001", config=config)
    assert result.returncode != 0
    assert "topics.toml" in result.stderr


# --- The notice and the ERROR log tell the truth: ALL files come from the copy ----------
# (helper h-notice; review finding F3)

NEW_URGENT_RULE = (
    '\n[[rule]]\nid = "urgent.local.library"\ncategory = "suicidal"\n'
    'reportable = false\npatterns = ["図書館の屋上"]\n'
)


def _valid_urgent_edit_and_partners_typo(rules: Path) -> None:
    """Staff add an urgent phrase (valid) and, in the same session, break partners.toml."""
    urgent = rules / "urgent.toml"
    urgent.write_text(urgent.read_text(encoding="utf-8") + NEW_URGENT_RULE, encoding="utf-8")
    partners = rules / "partners.toml"
    partners.write_text(partners.read_text(encoding="utf-8") + "\n[[partner]\n", encoding="utf-8")


def test_notice_says_a_valid_urgent_edit_is_not_in_force_while_another_file_is_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service runs with the whole saved copy, so the new urgent phrase is not used;
    the notice said only the broken files' changes were unused, and staff believed the
    phrase was live. It now says every change is unused and names urgent.toml."""
    from datetime import datetime

    from intake.pipeline import Service
    from intake.triage import classify_text

    monkeypatch.setenv("TEST_IMAP_PASSWORD", "x")
    settings = _settings(tmp_path)
    Service.from_settings(settings, last_good=True).close()  # saves the copy
    _valid_urgent_edit_and_partners_typo(settings.rules_dir)
    svc = Service.from_settings(settings, last_good=True)
    try:
        fallback = svc.rules_fallback
        assert fallback is not None
        assert {p.path.name for p in fallback.problems} == {"partners.toml"}
        phrase = "明日、図書館の屋上に行きます。"
        assert not classify_text("相談", phrase, svc.rules).urgent  # really not in force
        now = datetime.now(svc.calendar.tz)
        message = last_good_rules.notice_message(svc, fallback, [ONCALL], now)
    finally:
        svc.close()
    body = str(message.get_content())
    assert "誤りのあるファイルに加えた変更は、直すまで使われません。" not in body
    assert "rules/ のすべてのファイル" in body
    assert "誤りのないファイルの変更も含めて、すべて使われていません" in body
    lines = body.splitlines()
    assert "・urgent.toml: 変更あり → この変更は使われていません" in lines
    assert "・partners.toml【誤りあり】: 変更あり → この変更は使われていません" in lines
    assert not any(line.startswith(("・topics.toml", "・examples.jsonl")) for line in lines)
    assert "図書館" not in body  # names files, never quotes them
    assert "service.py check --config" in body and "restart" in body


def test_fallback_error_log_names_the_files_that_differ_from_the_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path)
    assert last_good_rules.load(settings, True).fallback is None  # saves the copy
    _valid_urgent_edit_and_partners_typo(settings.rules_dir)
    with caplog.at_level("ERROR", logger=last_good_rules.__name__):
        assert last_good_rules.load(settings, True).fallback is not None
    (record,) = [r for r in caplog.records if "running with the last rules" in r.getMessage()]
    assert record.levelname == "ERROR"
    assert "ALL rules files" in record.getMessage()
    assert "in files without problems too, is unused" in record.getMessage()
    differing = str(getattr(record, "differing", ""))
    assert "urgent.toml (changed)" in differing
    assert "partners.toml (changed, has problems)" in differing
    assert "topics.toml" not in differing
    assert "図書館" not in caplog.text


def test_file_differences_lists_changed_added_removed_and_broken_files_only(
    tmp_path: Path,
) -> None:
    """Pure comparison: what the fingerprint covers, names only; hidden files and editor
    backups are not rules and are never listed."""
    from intake.errors import Problem

    live, saved = tmp_path / "live", tmp_path / "saved"
    for folder in (live, saved):
        folder.mkdir()
        (folder / "same.toml").write_text("a = 1\n", encoding="utf-8")
        (folder / "broken_same.toml").write_text("b = 1\n", encoding="utf-8")
        (folder / "edited.toml").write_text("c = 1\n", encoding="utf-8")
    (live / "edited.toml").write_text("c = 2\n", encoding="utf-8")
    (live / "new.toml").write_text("d = 1\n", encoding="utf-8")
    (saved / "gone.toml").write_text("e = 1\n", encoding="utf-8")
    (live / ".edited.toml.swp").write_bytes(b"x")
    (live / "same.toml~").write_text("a = 0\n", encoding="utf-8")
    problems = [Problem(live / "broken_same.toml", 1, "unknown topic"), Problem(live, None, "x")]
    differences = last_good_rules.file_differences(live, saved, problems)
    assert differences == (
        last_good_rules.FileDifference("broken_same.toml", "same", True),
        last_good_rules.FileDifference("edited.toml", "changed", False),
        last_good_rules.FileDifference("gone.toml", "removed", False),
        last_good_rules.FileDifference("new.toml", "added", False),
    )
    assert last_good_rules.file_differences(tmp_path / "missing", saved, problems) is None


# --- the copy's place comes from the config, not the environment (review rv8 F5) ------


def test_with_postgresql_and_state_dir_show_from_a_shell_finds_the_workers_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unit sets SOUDAN_INTAKE_CACHE_DIR; the night alert tells on-call to run
    ``show`` from a shell, where it is not set. With PostgreSQL the copy lived in the
    cache folder, so ``show`` looked elsewhere and refused. ``[service] state_dir`` is one
    place for both (the reviewer's scenario, with the setting the README now gives)."""
    import re

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    rules = copy_rules(tmp_path)
    state = tmp_path / "var-lib-soudan-intake"
    config = offline_config(
        tmp_path, extra=f'\n[service]\nrules_dir = "{rules}"\nstate_dir = "{state}"\n'
    )
    text = re.sub(
        r'url = "sqlite:///[^"]*"',
        'url = "postgresql://intake@127.0.0.1:1/soudan"',
        config.read_text(encoding="utf-8"),
    )
    config.write_text(text, encoding="utf-8")
    settings = load_settings(config)
    unit_cache = tmp_path / "var-cache-soudan-intake"
    unit_cache.mkdir(mode=0o755)
    monkeypatch.setenv("SOUDAN_INTAKE_CACHE_DIR", str(unit_cache))  # as under systemd
    last_good_rules.load(settings, True)  # the worker's start saves the copy
    worker_root = last_good_rules.snapshot_root(settings)
    assert worker_root.is_relative_to(state)
    break_topics(rules)
    assert last_good_rules.load(settings, True).fallback is not None  # the worker runs on
    monkeypatch.delenv("SOUDAN_INTAKE_CACHE_DIR")  # on-call's shell
    assert last_good_rules.snapshot_root(settings) == worker_root
    loaded = last_good_rules.load(settings, False, read_only=True)
    assert loaded.fallback is not None


def test_a_staff_command_may_read_a_copy_owned_by_the_service_account(tmp_path: Path) -> None:
    """Staff run ``show`` as root or with sudo, not as the service's account: reading a
    copy nobody else may write is safe; the worker itself still uses only its own."""
    folder = tmp_path / "copy"
    folder.mkdir(mode=0o700)
    assert last_good_rules._private_to_read(folder)
    folder.chmod(0o770)
    assert not last_good_rules._private_to_read(folder)  # the group could plant rules


# --- only the folder's owner saves (review rv8b N1) ------------------------------------


def test_a_command_run_by_another_account_saves_nothing_in_the_services_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Root's first ``once`` in the state folder systemd made for the service account left
    a copy the worker could neither use nor replace; the next rules mistake stopped the
    worker. Now only the folder's owner saves, and the read marks follow the same rule."""
    import logging

    from intake import read_marks

    if os.getuid() != 0:
        pytest.skip("needs root to give a folder to another account")
    settings = _settings(tmp_path)
    service_account = 65534  # nobody: the account StateDirectory= made the folder for
    folder = last_good_rules.snapshot_root(settings).parent
    folder.mkdir(mode=0o700)
    os.chown(folder, service_account, service_account)
    caplog.set_level(logging.WARNING)
    assert not last_good_rules.save(settings, rules_fingerprint(settings.rules_dir))
    assert list(folder.iterdir()) == []  # nothing made for the service account to trip on
    assert "belongs to another account" in caplog.text

    marks = tmp_path / "state" / "read-marks"
    marks.parent.mkdir()
    os.chown(marks.parent, service_account, service_account)
    read_marks.save(marks / "x.read", "box", read_marks.ReadMark(7, 9))
    assert not marks.exists()


def test_a_worker_finding_copies_of_another_account_says_so_at_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    if os.getuid() != 0:
        pytest.skip("needs root to give a folder to another account")
    settings = _settings(tmp_path)
    assert last_good_rules.save(settings, rules_fingerprint(settings.rules_dir))
    root = last_good_rules.snapshot_root(settings)
    for path in (root, *root.rglob("*")):
        os.chown(path, 65534, 65534, follow_symlinks=False)  # made by another account
    caplog.set_level(logging.WARNING)
    topics = settings.rules_dir / "topics.toml"
    topics.write_bytes(topics.read_bytes() + b"\n# edited\n")
    assert not last_good_rules.save(settings, rules_fingerprint(settings.rules_dir))
    assert [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "chown" in caplog.text


def test_a_state_folder_reached_through_a_link_owned_by_another_account_is_still_ours(
    tmp_path: Path,
) -> None:
    """systemd's ``DynamicUser=`` state folders and an admin's link to a data disk are
    links owned by root to the service's own folder; the owner check read the link's
    owner and the worker refused to save anything (review rv8c)."""
    from intake import read_marks

    if os.getuid() != 0:
        pytest.skip("needs root to give a link to another account")
    real = tmp_path / "disk" / "soudan-intake"
    real.mkdir(parents=True, mode=0o700)  # this account's folder
    link = tmp_path / "state"
    link.symlink_to(real)
    os.lchown(link, 65534, 65534)  # the link is another account's
    settings = _settings(tmp_path)
    settings = replace(settings, state_dir=link, last_good_rules_dir=None)
    assert last_good_rules.save(settings, rules_fingerprint(settings.rules_dir))
    mark = link / "read-marks" / "x.read"
    read_marks.save(mark, "box", read_marks.ReadMark(7, 9))
    assert read_marks.load(mark, "box") == read_marks.ReadMark(7, 9)


@pytest.mark.integration
def test_digest_by_hand_with_a_typo_in_the_rules_still_reaches_the_partners(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP
) -> None:
    """Staff sending the digests by hand while the rules are broken: the worker routes
    with the saved copy, and so does ``digest`` (it refused with a rules problem)."""
    rules = copy_rules(tmp_path)
    config = write_config(
        tmp_path, dovecot, smtp_server, extra=f'\n[service]\nrules_dir = "{rules}"\n'
    )
    dovecot.append(
        samples.consultation(
            "resident.test@example.jp", "相談", "家賃が払えなくて生活が苦しいです。"
        )
    )
    first = run_service("once", config=config, password=dovecot.password)
    assert first.returncode == 0, first.stderr
    smtp_server.wait_for(1, timeout=20)
    smtp_server.clear()
    line = break_topics(rules)

    result = run_service("digest", config=config, password=dovecot.password)
    assert result.returncode == 0, result.stderr
    assert f"topics.toml:{line}: " in result.stderr
    assert "digest for" in result.stdout, result.stdout
    mails = smtp_server.wait_for(2, timeout=20)
    digests = [m for m in mails if m.message["X-Soudan-Intake"] == "digest"]
    assert len(digests) == 1 and "受付番号:" in text_of(digests[0])
    assert len(notices(mails)) == 1  # staff are told the rules are broken, as by once
