"""Config loading: clear errors naming file and key; secrets never in the file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from intake.config import ConfigProblems, load_settings
from intake.errors import ConfigError

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
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_tls_and_sqlite(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, GOOD))
    assert s.mailbox.security == "tls" and s.mailbox.port == 993
    assert s.smtp.port == 587
    assert s.database_url.startswith("sqlite:///")
    assert str(s.timezone) == "Asia/Tokyo"


def test_password_in_file_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace('password_env = "IMAP_PW"', 'password = "hunter2hunter2"')
    with pytest.raises(ConfigError, match=r"mailbox\.password: passwords are never written"):
        load_settings(write(tmp_path, text))


def test_plain_text_to_a_remote_host_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace('host = "imap.example.jp"', 'host = "imap.example.jp"\nsecurity = "plain"')
    with pytest.raises(ConfigError, match="plain text is allowed only to loopback"):
        load_settings(write(tmp_path, text))


def test_missing_key_names_file_and_section(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('username = "sasaean"\n', ""))
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(path) in str(err.value) and "mailbox.username: missing" in str(err.value)


def test_secret_is_read_from_environment_only_when_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = load_settings(write(tmp_path, GOOD))
    monkeypatch.delenv("IMAP_PW", raising=False)
    with pytest.raises(ConfigError, match="IMAP_PW is not set"):
        s.mailbox.password.get()
    monkeypatch.setenv("IMAP_PW", "s3cret-value")
    assert s.mailbox.password.get() == "s3cret-value"
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o606])
def test_password_file_others_can_read_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    (tmp_path / "pw").write_text("from-file\n", encoding="utf-8")
    (tmp_path / "pw").chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600") as caught:
        load_settings(
            write(tmp_path, GOOD.replace('password_env = "IMAP_PW"', 'password_file = "pw"'))
        )
    assert "from-file" not in str(caught.value)


def test_password_file_is_relative_to_config(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n", encoding="utf-8")
    (tmp_path / "pw").chmod(0o600)
    s = load_settings(
        write(tmp_path, GOOD.replace('password_env = "IMAP_PW"', 'password_file = "pw"'))
    )
    assert s.mailbox.password.get() == "from-file"


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[mailbox\nhost="))


def test_smtp_username_without_a_password_source_is_refused(tmp_path: Path) -> None:
    config = GOOD.replace("[smtp]\n", '[smtp]\nusername = "relay-user"\n', 1)
    assert 'username = "relay-user"' in config
    with pytest.raises(ConfigError, match=r"smtp\.username: needs a password"):
        load_settings(write(tmp_path, config))


def problems_of(path: Path) -> list[str]:
    """Every problem the loader reports for ``path`` (it must report at least one)."""
    with pytest.raises(ConfigProblems) as caught:
        load_settings(path)
    return caught.value.problems


def line_of(text: str, start: str) -> int:
    return next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith(start))


def test_misspelt_keys_and_tables_are_each_reported_with_line_and_nearest_name(
    tmp_path: Path,
) -> None:
    text = (
        GOOD.replace(
            'to = ["oncall@example.jp"]', 'to = ["oncall@example.jp"]\nescalate_after_minuts = 5'
        )
        + 'backups = ["backup@example.jp"]\n\n[servce]\noffice_open = "09:00"\n'
    )
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert len(problems) == 3, problems
    minuts, backups, servce = problems
    assert minuts.startswith(f"{path}:{line_of(text, 'escalate_after_minuts')}: oncall.")
    assert "unknown key under [oncall]" in minuts
    assert "did you mean escalate_after_minutes?" in minuts
    assert backups.startswith(f"{path}:{line_of(text, 'backups')}: oncall.backups:")
    assert "did you mean backup?" in backups
    assert servce.startswith(f"{path}:{line_of(text, '[servce]')}: servce: unknown table")
    assert "did you mean [service]?" in servce


@pytest.mark.parametrize("key", ["passwd", "pass", "password2", "imap_password", "pwd"])
def test_a_password_like_key_holding_a_value_is_refused_as_a_password_in_the_file(
    tmp_path: Path, key: str
) -> None:
    text = GOOD.replace('password_env = "IMAP_PW"', f'{key} = "hunter2hunter2"')
    problems = problems_of(write(tmp_path, text))
    assert any(f"mailbox.{key}: looks like a password written in the config" in p for p in problems)
    assert not any("hunter2" in p for p in problems)


def test_a_misspelt_password_env_is_named_as_such(tmp_path: Path) -> None:
    text = GOOD.replace('password_env = "IMAP_PW"', 'password_env = "IMAP_PW"\n').replace(
        "[smtp]\n", '[smtp]\nusername = "relay"\npasword_env = "SMTP_PW"\n', 1
    )
    problems = problems_of(write(tmp_path, text))
    assert any("smtp.pasword_env: unknown key" in p and "password_env?" in p for p in problems)


def test_every_problem_is_reported_at_once_each_with_its_line(tmp_path: Path) -> None:
    text = GOOD.replace('password_env = "IMAP_PW"', 'password = "hunter2hunter2"') + (
        'backups = ["b@example.jp"]\n\n[service]\noffice_open = "8:30"\n'
    )
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert [p.split(": ")[0] for p in problems] == [
        f"{path}:{line_of(text, 'password =')}",
        f"{path}:{line_of(text, 'backups')}",
        f"{path}:{line_of(text, 'office_open')}",
    ], problems
    assert "mailbox.password: passwords are never written" in problems[0]
    assert 'service.office_open: times are "HH:MM"' in problems[2]


def test_a_relative_sqlite_url_is_relative_to_the_config_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "elsewhere").mkdir()
    path = write(tmp_path / "etc", GOOD + '\n[database]\nurl = "sqlite:///var/intake.db"\n')
    monkeypatch.chdir(tmp_path / "elsewhere")
    s = load_settings(path)
    assert s.database_url == f"sqlite:///{(tmp_path / 'etc' / 'var' / 'intake.db').as_posix()}"
    default = load_settings(write(tmp_path / "etc", GOOD))
    assert default.database_url == s.database_url


def test_a_database_left_where_a_relative_url_used_to_point_is_not_silently_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upgrading: a relative sqlite URL once followed the working directory. Starting on a
    new, empty database beside the config would acknowledge and alert every mail again."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "opt" / "var").mkdir(parents=True)
    (tmp_path / "opt" / "var" / "intake.db").write_bytes(b"")
    path = write(tmp_path / "etc", GOOD + '\n[database]\nurl = "sqlite:///var/intake.db"\n')
    monkeypatch.chdir(tmp_path / "opt")
    with pytest.raises(ConfigError, match="give it as an absolute path") as err:
        load_settings(path)
    assert (tmp_path / "opt" / "var" / "intake.db").as_posix() in str(err.value)
    (tmp_path / "etc" / "var").mkdir()
    (tmp_path / "etc" / "var" / "intake.db").write_bytes(b"")  # moved beside the config
    assert load_settings(path).database_url.endswith("/etc/var/intake.db")


def test_an_absolute_sqlite_url_is_kept(tmp_path: Path) -> None:
    url = f"sqlite:///{(tmp_path / 'db' / 'intake.db').as_posix()}?timeout=5"
    s = load_settings(write(tmp_path, GOOD + f'\n[database]\nurl = "{url}"\n'))
    assert s.database_url == url


def test_a_postgresql_url_with_a_password_is_refused_without_printing_it(tmp_path: Path) -> None:
    url = "postgresql+psycopg://intake:hunter2hunter2@db.example.jp/intake"
    text = GOOD + f'\n[database]\nurl = "{url}"\n'
    path = write(tmp_path, text)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(text, 'url =')}: database.url: holds a password")
    assert "PGPASSFILE" in problem and "PGPASSWORD" in problem
    assert "hunter2" not in problem
    ok = (
        GOOD + '\n[database]\nurl = "postgresql+psycopg://intake@db.example.jp/intake'
        '?sslmode=verify-full"\n'
    )
    assert load_settings(write(tmp_path, ok)).database_url.endswith("/intake?sslmode=verify-full")


def test_a_password_in_the_postgresql_url_query_is_refused_too(tmp_path: Path) -> None:
    """libpq reads ?password= as well as user:password@ (review rv9b F5)."""
    url = "postgresql+psycopg://intake@db.example.jp/intake?sslmode=verify-full&password=hunter2"
    path = write(tmp_path, GOOD + f'\n[database]\nurl = "{url}"\n')
    (problem,) = problems_of(path)
    assert "database.url: holds a password" in problem and "hunter2" not in problem


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://intake@db.example.jp/intake",
        "postgresql+psycopg://intake@db.example.jp/intake?sslmode=prefer",
        "postgresql+psycopg://intake@db.example.jp/intake?sslmode=require",
        "postgresql+psycopg://intake@/intake?host=db.example.jp",
    ],
)
def test_postgresql_on_another_machine_needs_a_checked_tls_connection(
    tmp_path: Path, url: str
) -> None:
    """libpq's default falls back to plain text and checks no certificate: consultations
    crossed the network in clear (review rv9b F4), where IMAP and SMTP refuse it."""
    path = write(tmp_path, GOOD + f'\n[database]\nurl = "{url}"\n')
    (problem,) = problems_of(path)
    assert "database.url" in problem and "sslmode=verify-full" in problem


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://intake@db.example.jp/intake?sslmode=verify-full",
        "postgresql+psycopg://intake@127.0.0.1:5432/intake",
        "postgresql+psycopg://intake@localhost/intake",
        "postgresql+psycopg://intake@/intake",
        "postgresql+psycopg://intake@/intake?host=/var/run/postgresql",
    ],
)
def test_postgresql_on_this_machine_or_over_checked_tls_is_accepted(
    tmp_path: Path, url: str
) -> None:
    assert load_settings(write(tmp_path, GOOD + f'\n[database]\nurl = "{url}"\n'))


@pytest.mark.parametrize(
    ("table", "key"),
    [("oncall", "to"), ("oncall", "backup"), ("oncall", "off_hours"), ("service", "coordinator")],
)
def test_an_alert_or_digest_address_without_at_is_refused(
    tmp_path: Path, table: str, key: str
) -> None:
    values = {
        "oncall": {"to": '["oncall@example.jp"]', "backup": '["backup@example.jp"]'},
        "service": {},
    }
    values[table][key] = '["ok@example.jp", "night.example.jp"]'
    text = GOOD.split("[oncall]")[0] + "".join(
        f"[{t}]\n" + "".join(f"{k} = {v}\n" for k, v in body.items()) + "\n"
        for t, body in values.items()
    )
    path = write(tmp_path, text)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(text, key + ' =')}: {table}.{key}: ")
    assert "'night.example.jp' is not a mail address" in problem


def test_a_mailbox_without_a_password_source_is_warned_about_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = GOOD.replace('password_env = "IMAP_PW"\n', "")
    path = write(tmp_path, text)
    with caplog.at_level(logging.WARNING, logger="intake.config"):
        load_settings(path)
    assert f"{path}:{line_of(text, '[mailbox]')}: mailbox.password_env: missing" in caplog.text


@pytest.mark.parametrize("table", ["mailbox", "smtp"])
def test_a_cafile_that_does_not_exist_is_refused(tmp_path: Path, table: str) -> None:
    text = GOOD.replace(f"[{table}]\n", f'[{table}]\ncafile = "ca.pem"\n')
    (problem,) = problems_of(write(tmp_path, text))
    assert f"{table}.cafile: {tmp_path / 'ca.pem'} does not exist" in problem
    (tmp_path / "ca.pem").write_text("synthetic\n", encoding="utf-8")
    assert load_settings(write(tmp_path, text))


@pytest.mark.parametrize("value", ["0", "-5", "3600"])
def test_idle_seconds_outside_what_imap_servers_allow_is_refused_with_its_line(
    tmp_path: Path, value: str
) -> None:
    """One IDLE lasts at most idle_seconds; RFC 2177 servers may end an IDLE after 30
    minutes without a word, and 0 would spin. Both are refused with the key's line."""
    text = GOOD.replace(
        'password_env = "IMAP_PW"', f'password_env = "IMAP_PW"\nidle_seconds = {value}'
    )
    with pytest.raises(ConfigProblems) as info:
        load_settings(write(tmp_path, text))
    assert "idle_seconds" in str(info.value) and ":6" in str(info.value)


def test_idle_seconds_defaults_to_half_a_minute_and_can_be_set(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, GOOD)).mailbox.idle_seconds == 30.0
    text = GOOD.replace('password_env = "IMAP_PW"', 'password_env = "IMAP_PW"\nidle_seconds = 120')
    assert load_settings(write(tmp_path, text)).mailbox.idle_seconds == 120.0
