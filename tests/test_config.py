"""Config loading: clear errors naming file and key; secrets never in the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from intake.config import load_settings
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
