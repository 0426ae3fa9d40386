"""Settings: ``load_settings(path) -> Settings`` from one TOML file.

Why a hand-written loader instead of a settings framework: every error must name the
file, the key and the fix, because the reader is the city's IT contractor. Secrets are
never in the file: it names an environment variable (``password_env``) or a file
(``password_file``) that holds them, and they are read only when a connection is made.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from intake.errors import ConfigError

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SECURITY_MODES = ("tls", "starttls", "plain")


def is_loopback(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 / ::1: the only hosts plain text may reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Secret:
    """Where a password lives. ``get()`` reads it at connection time, never logs it."""

    env: str | None = None
    file: Path | None = None

    def get(self) -> str | None:
        if self.env:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError(
                    f"environment variable {self.env} is not set; export it with the password "
                    "(the config names it in password_env)"
                )
            return value
        if self.file:
            try:
                return self.file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read password_file {self.file}: {exc.strerror}") from exc
        return None

    def __repr__(self) -> str:  # never show a secret, only where it comes from
        return f"Secret(env={self.env!r}, file={self.file!r})"


@dataclass(frozen=True)
class MailboxSettings:
    host: str
    port: int
    security: str
    username: str
    password: Secret
    folder: str = "INBOX"
    cafile: Path | None = None
    timeout: float = 30.0
    idle: bool = True
    poll_interval: float = 60.0
    batch_size: int = 100
    move_to: str | None = None  # housekeeping: move processed mail here (off by default)
    id: str | None = None  # stable name of this mailbox in the database; see ``key``

    @property
    def key(self) -> str:
        """Identifies this mailbox in the database (cursor, duplicates, tenant isolation).

        ``[mailbox] id`` when set; otherwise ``username@host/folder``. Set ``id`` in
        production: with the default, renaming the server or the folder in the config makes
        the mailbox look new, and mail still in the folder would be read (and acknowledged)
        again.
        """
        return self.id or f"{self.username}@{self.host}/{self.folder}"


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str
    from_address: str
    from_name: str
    username: str | None = None
    password: Secret = field(default_factory=Secret)
    cafile: Path | None = None
    timeout: float = 30.0


@dataclass(frozen=True)
class OncallSettings:
    to: tuple[str, ...]
    backup: tuple[str, ...] = ()
    off_hours: tuple[str, ...] = ()  # also alerted outside office hours (night duty)
    # an unacknowledged alert is escalated after this long, then every ``escalate_every``
    # minutes, at most ``escalate_max`` times (0 switches escalation off)
    escalate_after_minutes: int = 30
    escalate_every_minutes: int = 30
    escalate_max: int = 3

    def alert_recipients(self, office_open: bool) -> list[str]:
        """Who gets an urgent alert now: ``to`` always, ``off_hours`` when the office is shut."""
        seen: list[str] = []
        for address in (*self.to, *(() if office_open else self.off_hours)):
            if address.lower() not in (a.lower() for a in seen):
                seen.append(address)
        return seen

    @property
    def everyone(self) -> tuple[str, ...]:
        """Every on-call address: replies from any of them acknowledge an alert."""
        return (*self.to, *self.backup, *self.off_hours)

    @property
    def lone(self) -> bool:
        """True when ``backup`` names nobody besides ``to``: then an alert the mail server
        refuses for good (a mistyped or deleted on-call address, a content filter) and every
        escalation of it go to the same unreachable place, and no human hears of the case.
        """
        to = {a.lower() for a in self.to}
        return not any(a.lower() not in to for a in self.backup)


@dataclass(frozen=True)
class Settings:
    path: Path | None
    mailbox: MailboxSettings
    smtp: SmtpSettings
    database_url: str
    oncall: OncallSettings
    rules_dir: Path
    templates_dir: Path
    timezone: ZoneInfo
    ack_window_hours: float = 24.0
    max_message_bytes: int = 25 * 1024 * 1024
    coordinator: tuple[str, ...] = ()
    digest_times: tuple[str, ...] = ("09:00", "14:00")
    office_open: str = "08:30"
    office_close: str = "16:30"  # the city desk's hours in the seed table
    closures: tuple[str, ...] = ()  # extra closure days, "YYYY-MM-DD" or "MM-DD"
    retention_days: int = 365  # [retention] keep_days: consultations are blanked after this
    salt_file: Path | None = None  # [report] salt_file: the key of the report's sender hashes
    # [service] prepare_processes: worker processes that parse and triage a large batch
    # (see ``intake.prepare_pool``); 0 (the default) keeps everything in the worker,
    # "auto" is min(CPUs - 1, 3). Off by default because each process holds its own
    # analyser and rules (~95 MB PSS) and, measured on 2 vCPUs, the pool gave only
    # 0.85-1.35x: it pays on a machine with CPUs to spare and a backlog to catch up.
    prepare_processes: int = 0


def auto_prepare_processes() -> int:
    """``prepare_processes = "auto"``: one process per CPU beyond the one the worker itself
    needs for the database writes, at most 3 (more adds memory, not speed, at 100 mails a
    batch)."""
    return max(0, min((os.cpu_count() or 1) - 1, 3))


def _prepare_processes(sec: _Section) -> int:
    """``[service] prepare_processes``: "auto", or a whole number (0 = no pool)."""
    value = sec.data.get("prepare_processes", 0)
    if value == "auto":
        return auto_prepare_processes()
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 64:
        raise sec.error(
            "prepare_processes",
            f'must be "auto" or a whole number from 0 (no pool) to 64, got {value!r}',
        )
    return value


class _Section:
    """Typed access to one TOML table that reports path and key on every mistake."""

    def __init__(self, path: Path | None, name: str, data: Any):
        self.path = path
        self.name = name
        if not isinstance(data, dict):
            raise self.error(name, "must be a table, e.g. [" + name + "]")
        self.data: dict[str, Any] = data

    def error(self, key: str, message: str) -> ConfigError:
        where = str(self.path) if self.path else "<config>"
        full = key if key == self.name else f"{self.name}.{key}"
        return ConfigError(f"{where}: {full}: {message}")

    def get(self, key: str, kind: type, default: Any = ..., *, required: bool = False) -> Any:
        if key not in self.data:
            if required or default is ...:
                raise self.error(key, f"missing; add `{key} = ...` under [{self.name}]")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"must be a {kind.__name__}, got {value!r}")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.data.get(key, list(default))
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, 'must be a list of strings, e.g. ["a@example.jp"]')
        return tuple(value)


def _secret(sec: _Section, base: Path) -> Secret:
    env = sec.get("password_env", str, None)
    file = sec.get("password_file", str, None)
    if "password" in sec.data:
        raise sec.error(
            "password",
            'passwords are never written in the config; set password_env = "NAME" and export '
            'NAME, or password_file = "/path" readable only by the service',
        )
    if env and file:
        raise sec.error("password_env", "give password_env or password_file, not both")
    path = (base / file) if file else None
    if path is not None:
        try:
            mode = path.stat().st_mode
        except OSError:
            mode = 0  # read (and reported) at connection time: it may be mounted later
        if mode & 0o077:
            # as ssh refuses a private key others can read: the password would be theirs too
            raise sec.error(
                "password_file",
                f"{path} can be read or written by other users (mode {stat.S_IMODE(mode):o}); "
                f"run: chmod 600 {path}",
            )
    return Secret(env=env, file=path)


def _security(sec: _Section, host: str) -> str:
    security = sec.get("security", str, "tls")
    if security not in SECURITY_MODES:
        raise sec.error("security", f"must be one of {', '.join(SECURITY_MODES)}")
    if security == "plain" and not is_loopback(host):
        raise sec.error(
            "security",
            f"plain text is allowed only to loopback hosts, not {host!r}; use tls or starttls",
        )
    return security


def _whole(sec: _Section, key: str, default: int, *, minimum: int) -> int:
    """A whole number of at least ``minimum`` (minutes, days, counts)."""
    value = sec.data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise sec.error(key, f"must be a whole number >= {minimum}, got {value!r}")
    return value


def _path(base: Path, value: str | None) -> Path | None:
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else base / p


def settings_from_dict(data: dict[str, Any], path: Path | None = None) -> Settings:
    """Build Settings from parsed TOML; relative paths are relative to the config file."""
    base = path.parent if path else Path.cwd()
    top = _Section(path, "config", data)
    mb = _Section(path, "mailbox", top.data.get("mailbox", {}))
    mb_host = mb.get("host", str, required=True)
    mb_security = _security(mb, mb_host)
    mailbox = MailboxSettings(
        host=mb_host,
        port=mb.get("port", int, {"tls": 993}.get(mb_security, 143)),
        security=mb_security,
        username=mb.get("username", str, required=True),
        password=_secret(mb, base),
        folder=mb.get("folder", str, "INBOX"),
        cafile=_path(base, mb.get("cafile", str, None)),
        timeout=mb.get("timeout", float, 30.0),
        idle=mb.get("idle", bool, True),
        poll_interval=mb.get("poll_interval", float, 60.0),
        batch_size=mb.get("batch_size", int, 100),
        move_to=mb.get("move_to", str, None) or None,
        id=mb.get("id", str, None) or None,
    )
    for key, value in (
        ("timeout", mailbox.timeout),
        ("poll_interval", mailbox.poll_interval),
        ("batch_size", mailbox.batch_size),
    ):
        if value <= 0:
            raise mb.error(key, f"must be greater than 0, got {value}")
    sm = _Section(path, "smtp", top.data.get("smtp", {}))
    sm_host = sm.get("host", str, required=True)
    sm_security = _security(sm, sm_host)
    sm_password = _secret(sm, base)
    if sm.data.get("username") and sm_password.env is None and sm_password.file is None:
        # aiosmtplib would log in with an empty password and the relay refuse every mail
        raise sm.error(
            "username", 'needs a password: add password_env = "NAME" or password_file = "/path"'
        )
    smtp = SmtpSettings(
        host=sm_host,
        port=sm.get("port", int, {"tls": 465, "starttls": 587}.get(sm_security, 25)),
        security=sm_security,
        from_address=sm.get("from_address", str, required=True),
        from_name=sm.get("from_name", str, "笠岡市 ささえ愛相談窓口"),
        username=sm.get("username", str, None),
        password=sm_password,
        cafile=_path(base, sm.get("cafile", str, None)),
        timeout=sm.get("timeout", float, 30.0),
    )
    db = _Section(path, "database", top.data.get("database", {}))
    default_db = f"sqlite:///{(base / 'var' / 'intake.db').as_posix()}"
    database_url = db.get("url", str, default_db)
    oc = _Section(path, "oncall", top.data.get("oncall", {}))
    oncall = OncallSettings(
        to=oc.strings("to"),
        backup=oc.strings("backup"),
        off_hours=oc.strings("off_hours"),
        escalate_after_minutes=_whole(oc, "escalate_after_minutes", 30, minimum=0),
        escalate_every_minutes=_whole(oc, "escalate_every_minutes", 30, minimum=0),
        escalate_max=_whole(oc, "escalate_max", 3, minimum=0),
    )
    if oncall.escalate_max and oncall.escalate_every_minutes == 0:
        raise oc.error("escalate_every_minutes", "must be > 0 to repeat (or escalate_max = 0)")
    if not oncall.to:
        raise oc.error("to", "at least one on-call address is needed for urgent alerts")
    if oncall.lone:
        # A warning, not a refusal: refusing here would also stop `run` of a working
        # installation after an upgrade, and a worker that does not start alerts nobody.
        # `check` and every start of the service print it until a backup is added.
        log.warning(
            "%s: oncall.backup: no backup address besides oncall.to; if the mail server "
            "refuses an urgent alert for good (a mistyped or deleted on-call address), "
            'nobody is told of the case. Add backup = ["..."] under [oncall]',
            path or "<config>",
        )
    if "@" not in smtp.from_address or smtp.from_address.startswith("@"):
        raise sm.error("from_address", f"must be a mail address, got {smtp.from_address!r}")
    sv = _Section(path, "service", top.data.get("service", {}))
    tzname = sv.get("timezone", str, "Asia/Tokyo")
    try:
        tz = ZoneInfo(tzname)
    except Exception as exc:
        raise sv.error("timezone", f"unknown time zone {tzname!r}") from exc
    settings = Settings(
        path=path,
        mailbox=mailbox,
        smtp=smtp,
        database_url=database_url,
        oncall=oncall,
        rules_dir=_path(base, sv.get("rules_dir", str, None)) or PROJECT_ROOT / "rules",
        templates_dir=_path(base, sv.get("templates_dir", str, None)) or PROJECT_ROOT / "templates",
        timezone=tz,
        ack_window_hours=sv.get("ack_window_hours", float, 24.0),
        max_message_bytes=sv.get("max_message_mb", int, 25) * 1024 * 1024,
        coordinator=sv.strings("coordinator"),
        digest_times=sv.strings("digest_times", ("09:00", "14:00")),
        office_open=sv.get("office_open", str, "08:30"),
        office_close=sv.get("office_close", str, "16:30"),
        closures=sv.strings("closures"),
        retention_days=_whole(
            _Section(path, "retention", top.data.get("retention", {})), "keep_days", 365, minimum=1
        ),
        salt_file=_path(
            base, _Section(path, "report", top.data.get("report", {})).get("salt_file", str, None)
        ),
        prepare_processes=_prepare_processes(sv),
    )
    _check_service(sv, settings)
    return settings


_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _check_service(sv: _Section, s: Settings) -> None:
    """Reject values that would crash ``run`` later or silently switch a duty off."""
    for key, values in (
        ("digest_times", s.digest_times),
        ("office_open", (s.office_open,)),
        ("office_close", (s.office_close,)),
    ):
        for value in values:
            if not _HHMM.match(value):
                raise sv.error(key, f'times are "HH:MM" (00:00–23:59), got {value!r}')
    if s.office_open >= s.office_close:
        raise sv.error("office_close", f"must be after office_open ({s.office_open})")
    if s.max_message_bytes <= 0:
        raise sv.error("max_message_mb", "must be at least 1")
    if s.ack_window_hours < 0:
        raise sv.error("ack_window_hours", "must be 0 or more")
    for value in s.closures:
        if not re.match(r"^(\d{4}-)?\d{2}-\d{2}$", value):
            raise sv.error("closures", f'days are "YYYY-MM-DD" or "MM-DD", got {value!r}')


def load_settings(path: Path | str | None = None) -> Settings:
    """Load the config named by ``path`` or ``$INTAKE_CONFIG``."""
    if path is None:
        env = os.environ.get("INTAKE_CONFIG")
        if not env:
            raise ConfigError("no config given: pass --config PATH or set INTAKE_CONFIG")
        path = env
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return settings_from_dict(data, p.resolve())
