"""Settings: ``load_settings(path) -> Settings`` from one TOML file.

Why a hand-written loader instead of a settings framework: every error must name the
file, the key and the fix, because the reader is the city's IT contractor. Secrets are
never in the file: it names an environment variable (``password_env``) or a file
(``password_file``) that holds them, and they are read only when a connection is made.
"""

from __future__ import annotations

import difflib
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


# What the environment takes as a variable's name; anything else in ``password_env`` can
# never be set, and is most likely the password itself, written where its name goes.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The names messages print: upper case as variables are conventionally named. A legal but
# lower-case or mixed name (Kasaoka2026pw) may still be a password, so it is not printed.
_CONVENTIONAL = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def env_name_shown(name: str, key: str = "password_env") -> str:
    """``environment variable NAME`` for a conventional name, else a description of it.

    Why: the most natural mistake after the loader refuses ``password = "..."`` is to put
    the password where its variable's name goes, and every message naming the variable
    then logged the password, at every start of the service (review rv10a F3).
    """
    if _CONVENTIONAL.match(name):
        return f"environment variable {name}"
    return (
        f"the environment variable named in {key} (name not shown: it does not look like "
        "a variable name, and may be the password itself)"
    )


@dataclass(frozen=True)
class Secret:
    """Where a password lives. ``get()`` reads it at connection time, never logs it."""

    env: str | None = None
    file: Path | None = None
    key: str = field(default="password_env", compare=False)  # e.g. "smtp.password_env"

    @property
    def env_shown(self) -> str:
        """How messages name the variable: its name, or a description when the name does
        not look like one (see ``env_name_shown``)."""
        return env_name_shown(self.env or "", self.key)

    def get(self) -> str | None:
        if self.env:
            value = os.environ.get(self.env) if ENV_NAME.match(self.env) else None
            if value is None:
                raise ConfigError(
                    f"{self.key}: {self.env_shown} is not set; export it with the password "
                    "(e.g. in the service's EnvironmentFile)"
                )
            return value
        if self.file:
            try:
                return self.file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read password_file {self.file}: {exc.strerror}") from exc
            except UnicodeDecodeError:
                # Not chained: the error holds the file's bytes, the password itself.
                raise ConfigError(
                    f"password_file {self.file} is not UTF-8 text; save the password as "
                    "UTF-8 (a file of random bytes is not a password the servers accept)"
                ) from None
        return None

    def __repr__(self) -> str:  # never show a secret, only where it comes from
        env = self.env if self.env is None or _CONVENTIONAL.match(self.env) else "<not shown>"
        return f"Secret(env={env!r}, file={self.file!r})"


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
    # Longest single IDLE before the worker polls anyway (see ``Mailbox.wait``).
    idle_seconds: float = 30.0
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
    # [service] last_good_rules_dir: where the last rules that loaded are kept, one folder
    # per mailbox (``intake.last_good_rules``); None: beside a SQLite database, else the
    # learned model's cache folder.
    last_good_rules_dir: Path | None = None
    # [service] state_dir: the service's small state outside the database (read marks,
    # ``intake.read_marks``; the last good rules under ``last-good-rules`` unless
    # ``last_good_rules_dir``). None: beside a SQLite database; with PostgreSQL none is
    # kept (``check`` warns): a default taken from the environment differed between the
    # systemd unit and a shell (review rv8 F5).
    state_dir: Path | None = None


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
        sec.fail(
            "prepare_processes",
            f'must be "auto" or a whole number from 0 (no pool) to 64, got {value!r}',
        )
        return 0
    return value


class ConfigProblems(ConfigError):
    """Every problem found in one config file, so the contractor fixes them in one go.

    A ``ConfigError`` (whose text is all of them, one a line) that also keeps the list,
    for ``check`` to count and print them one by one.
    """

    def __init__(self, problems: list[str], settings: Settings | None = None):
        self.problems = problems
        # what could be read despite them (placeholders for the wrong values): lets
        # ``check`` go on with the rules and templates the config names
        self.settings = settings
        super().__init__("\n".join(problems))


# The keys each table may hold. Anything else is reported: the loader reads only what it
# knows, so a misspelt key (escalate_after_minuts) or table ([servce]) would otherwise be
# dropped without a word and its default silently used.
KNOWN_KEYS: dict[str, tuple[str, ...]] = {
    "mailbox": (
        "id",
        "host",
        "port",
        "security",
        "username",
        "password_env",
        "password_file",
        "folder",
        "cafile",
        "timeout",
        "idle",
        "idle_seconds",
        "poll_interval",
        "batch_size",
        "move_to",
    ),
    "smtp": (
        "host",
        "port",
        "security",
        "username",
        "password_env",
        "password_file",
        "from_address",
        "from_name",
        "cafile",
        "timeout",
    ),
    "database": ("url",),
    "oncall": (
        "to",
        "backup",
        "off_hours",
        "escalate_after_minutes",
        "escalate_every_minutes",
        "escalate_max",
    ),
    "service": (
        "coordinator",
        "digest_times",
        "office_open",
        "office_close",
        "closures",
        "ack_window_hours",
        "max_message_mb",
        "prepare_processes",
        "timezone",
        "rules_dir",
        "templates_dir",
        "last_good_rules_dir",
        "state_dir",
    ),
    "retention": ("keep_days",),
    "report": ("salt_file",),
}

# A key that looks like a password (pass, passwd, password, pwd, secret...) but is not one
# of the two ways to name where it lives: its value is most likely the password itself.
_PASSWORD_LIKE = re.compile(r"pass|pwd|secret", re.IGNORECASE)

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*[.=]""")


def _key_lines(text: str) -> dict[tuple[str, str], int]:
    """``(table, key) -> line`` (1-based) of each key and table header in a TOML text.

    Top-level tables are keyed ``("", name)``. A line scan, not a parser: tomllib keeps no
    positions, and the file has already parsed, so headers and ``key =`` lines suffice.
    """
    lines: dict[tuple[str, str], int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            parts = [part.strip().strip("\"'") for part in header.group(1).split(".")]
            table = ".".join(parts)
            lines.setdefault((".".join(parts[:-1]), parts[-1]), number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((table, key.group(1).strip("\"'")), number)
    return lines


def where_in(path: Path | None, table: str, key: str) -> str:
    """``file:line`` of ``[table] key`` in the config at ``path`` (just the file when the
    key is not written there), for problems found after loading (``check``)."""
    if path is None:
        return "<config>"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return str(path)
    return _Source(path, text).where(table, key)


class _Source:
    """The config file being read: its path, the line of each key, the problems so far."""

    def __init__(self, path: Path | None, text: str | None = None):
        self.path = path
        self.lines = _key_lines(text) if text is not None else {}
        self.problems: list[str] = []

    def where(self, table: str, key: str) -> str:
        """``file:line`` of ``key`` in ``table`` (of the table's header when the key is
        missing), or just the file when neither is written there."""
        name = str(self.path) if self.path else "<config>"
        line = self.lines.get((table, key)) or self.lines.get(("", table))
        return f"{name}:{line}" if line else name


def _line_in(problem: str) -> int:
    """The line a ``file:line: ...`` problem points at (0 when it names none): problems are
    listed in the order of the file, as the contractor reads it."""
    match = re.match(r"^[^\n]*?:(\d+): ", problem)
    return int(match.group(1)) if match else 0


def _placeholder(kind: type) -> Any:
    """A stand-in for a missing or mistyped value so loading goes on to the next problem."""
    return {str: "", int: 0, float: 0.0, bool: False}.get(kind)


class _Section:
    """Typed access to one TOML table that reports path, line and key on every mistake.

    Mistakes are collected in the source (``fail``) rather than raised, so ``check`` and
    start-up name every one of them at once; the loader raises them all at the end.
    """

    def __init__(self, source: _Source, name: str, data: Any):
        self.source = source
        self.path = source.path
        self.name = name
        if not isinstance(data, dict):
            self.fail(name, "must be a table, e.g. [" + name + "]")
            data = {}
        self.data: dict[str, Any] = data

    def message(self, key: str, message: str) -> str:
        full = key if key == self.name else f"{self.name}.{key}"
        table, line_key = ("", key) if key == self.name else (self.name, key)
        return f"{self.source.where(table, line_key)}: {full}: {message}"

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.message(key, message))

    def fail(self, key: str, message: str) -> None:
        self.source.problems.append(self.message(key, message))

    def get(self, key: str, kind: type, default: Any = ..., *, required: bool = False) -> Any:
        if key not in self.data:
            if required or default is ...:
                self.fail(key, f"missing; add `{key} = ...` under [{self.name}]")
                return _placeholder(kind)
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            shown = "a value not shown" if _PASSWORD_LIKE.search(key) else repr(value)
            if kind is bool:
                # "false" in quotes is a string, which Python would read as true
                self.fail(key, f"must be true or false, without quotes, got {shown}")
            else:
                self.fail(key, f"must be a {kind.__name__}, got {shown}")
            return _placeholder(kind) if default is ... else default
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.data.get(key, list(default))
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(key, 'must be a list of strings, e.g. ["a@example.jp"]')
            return default
        return tuple(value)

    def addresses(self, key: str) -> tuple[str, ...]:
        """A list of mail addresses, each one usable address (``address_problem``)."""
        if isinstance(self.data.get(key), str) and re.search(r"[,;\s]", self.data[key].strip()):
            self.fail(
                key,
                "one string holding several addresses: only the first would be mailed; write a "
                'list with one address per string: ["a@example.jp", "b@example.jp"]',
            )
            # the addresses it holds, so no second problem says the list is empty
            return tuple(a for a in re.split(r"[,;\s]+", self.data[key]) if a)
        values = self.strings(key)
        for value in values:
            problem = address_problem(value)
            if problem:
                self.fail(key, f"{value!r} {problem}")
        return values


# One usable address: what relays accept without SMTPUTF8 and what DNS can resolve.
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_DOMAIN = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}$")


def address_problem(value: str) -> str | None:
    """What is wrong with ``value`` as one mail address (None: nothing).

    Why stricter than "has an @": a list entry holding two addresses ("a@x.jp, b@x.jp")
    was accepted and only the first person got alerts; an address typed with an IME in
    full-width letters, or a domain without a dot, is refused by the relay or DNS only
    when the alert is sent, at night (review rv10a F2).
    """
    text = value.strip()
    if re.search(r"[,;\s]", text):
        return (
            "holds a comma, semicolon or space: write each address as its own string, "
            '["a@example.jp", "b@example.jp"]'
        )
    if not text.isascii():
        return (
            "has full-width or other non-ASCII characters (typed with the Japanese input "
            "on?); retype it in half-width letters"
        )
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        return 'is not a mail address; write it as "name@domain"'
    if "@" in local or not _LOCAL_PART.match(local):
        return 'is not one mail address; write it as "name@domain"'
    if not _DOMAIN.match(domain) and domain.lower() != "localhost":
        return (
            f"has no usable domain ({domain!r}): a domain has a dot and letters, digits and "
            'hyphens only, e.g. "name@city.kasaoka.okayama.jp"'
        )
    return None


def _unknown_keys(source: _Source, data: dict[str, Any]) -> None:
    """Report every table and key the loader does not read, with the nearest known name.

    A key whose name looks like a password and that holds a value is reported as a
    password written in the file, which it most likely is (``passwd = "..."``).
    """
    tables = sorted(KNOWN_KEYS)
    for table, body in data.items():
        if table not in KNOWN_KEYS:
            close = difflib.get_close_matches(table, tables, n=1)
            hint = f"did you mean [{close[0]}]? " if close else ""
            kind = "table" if isinstance(body, dict) else "key"
            source.problems.append(
                f"{source.where('', table)}: {table}: unknown {kind}, so everything in it "
                f"would be ignored; {hint}the tables are " + ", ".join(f"[{t}]" for t in tables)
            )
            continue
        if not isinstance(body, dict):
            continue  # reported by its _Section ("must be a table")
        known = KNOWN_KEYS[table]
        for key, value in body.items():
            if key in known or (key == "password" and "password_env" in known):
                continue  # ``password`` itself: refused by _secret with the fix
            where = f"{source.where(table, key)}: {table}.{key}"
            if (
                _PASSWORD_LIKE.search(key)
                and not key.endswith(("_env", "_file"))
                and value not in ("", None)
            ):
                source.problems.append(
                    f"{where}: looks like a password written in the config; passwords are "
                    'never written there: set password_env = "NAME" and export NAME, or '
                    'password_file = "/path" readable only by the service'
                )
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            what = "table" if isinstance(value, dict) else "key"
            source.problems.append(
                f"{where}: unknown {what} under [{table}], so it would be ignored; "
                f"{hint}the keys of [{table}] are {', '.join(known)}"
            )


def _secret(sec: _Section, base: Path, *, required: bool = False) -> Secret:
    env = sec.get("password_env", str, None)
    file = sec.get("password_file", str, None)
    if "password" in sec.data:
        sec.fail(
            "password",
            'passwords are never written in the config; set password_env = "NAME" and export '
            'NAME, or password_file = "/path" readable only by the service',
        )
    elif required and not env and not file:
        # The login would be tried with an empty password and refused at every poll.
        # `check` refuses it; start-up only warns, as for a missing backup (a config built
        # in code, e.g. for tests or tools that never log in, needs no password).
        log.warning(
            "%s: %s.password_env: missing: the server needs a password; add "
            'password_env = "NAME" (and export NAME) or password_file = "/path" under [%s]',
            sec.source.where(sec.name, "password_env"),
            sec.name,
            sec.name,
        )
    if env and not ENV_NAME.match(env):
        # the value is not shown: it is most likely the password itself
        sec.fail(
            "password_env",
            "is not the name of an environment variable (letters, digits and _, not "
            "starting with a digit); the value is not shown, as it may be the password "
            "itself: put the password in the service's EnvironmentFile as NAME=... and "
            'write password_env = "NAME" (e.g. INTAKE_IMAP_PASSWORD); if it was the '
            "password, change it, since it has been written in the config",
        )
    if env and file:
        sec.fail("password_env", "give password_env or password_file, not both")
    path = (base / file) if file else None
    if path is not None:
        try:
            mode = path.stat().st_mode
        except OSError:
            mode = 0  # read (and reported) at connection time: it may be mounted later
        if mode & 0o077:
            # as ssh refuses a private key others can read: the password would be theirs too
            sec.fail(
                "password_file",
                f"{path} can be read or written by other users (mode {stat.S_IMODE(mode):o}); "
                f"run: chmod 600 {path}",
            )
    return Secret(env=env, file=path, key=f"{sec.name}.password_env")


def _security(sec: _Section, host: str) -> str:
    security = sec.get("security", str, "tls")
    if security not in SECURITY_MODES:
        sec.fail("security", f"must be one of {', '.join(SECURITY_MODES)}")
        return "tls"
    if security == "plain" and not is_loopback(host):
        sec.fail(
            "security",
            f"plain text is allowed only to loopback hosts, not {host!r}; use tls or starttls",
        )
    return security


def _whole(sec: _Section, key: str, default: int, *, minimum: int) -> int:
    """A whole number of at least ``minimum`` (minutes, days, counts)."""
    value = sec.data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        sec.fail(key, f"must be a whole number >= {minimum}, got {value!r}")
        return default
    return value


def _path(base: Path, value: str | None) -> Path | None:
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else base / p


def _existing(sec: _Section, key: str, path: Path | None) -> Path | None:
    """``path`` if it exists (or cannot be looked at by this user); a missing one is a
    mistake in the config (a CA file that is not there fails every TLS connection)."""
    if path is not None:
        try:
            path.stat()
        except (FileNotFoundError, NotADirectoryError):
            sec.fail(
                key,
                f"{path} does not exist; fix the path (relative paths are relative to the "
                f"config file) or remove {key}",
            )
        except OSError:
            pass  # another user's file: the service's account may read it
    return path


_SQLITE = re.compile(r"^(sqlite(?:\+\w+)?):///(.*)$")


def _database_url(db: _Section, base: Path) -> str:
    """``[database] url``; a relative SQLite path is made relative to the config's folder.

    Why: SQLAlchemy reads ``sqlite:///var/intake.db`` relative to the current directory,
    so a staff command run from another directory silently created and read a new, empty
    database. A URL with a password in it is refused, as ``password =`` is.
    """
    default = f"sqlite:///{(base / 'var' / 'intake.db').as_posix()}"
    url: str = db.get("url", str, default)
    sqlite = _SQLITE.match(url)
    if sqlite:
        file, sep, query = sqlite.group(2).partition("?")
        if file and file != ":memory:" and not file.startswith(("/", "file:")):
            here, there = base / file, Path.cwd() / file
            if not here.exists() and there.exists() and there.resolve() != here.resolve():
                # Before this version a relative path followed the working directory: an
                # installation that relied on it would otherwise start on a new, empty
                # database beside the config and acknowledge and alert every mail in the
                # folder again.
                db.fail(
                    "url",
                    f"a relative SQLite path is now read beside the config ({here}), where "
                    f"there is no database, but one exists at {there}: give it as an "
                    f'absolute path, url = "sqlite:///{there.resolve().as_posix()}"',
                )
            url = f"{sqlite.group(1)}:///{here.as_posix()}{sep}{query}"
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        password = parsed.password
    except (ArgumentError, ValueError):
        db.fail(
            "url",
            'not a database URL; e.g. "sqlite:///var/intake.db" or '
            '"postgresql+psycopg://intake@db.example.jp/intake"',
        )
        return url
    if password is None and "password" in parsed.query:
        password = "given"  # libpq takes ?password=... as well (review rv9b F5)
    if password is not None:
        # not the URL itself in the message: it would print the password
        db.fail(
            "url",
            "holds a password; passwords are never written in the config: remove it from "
            "the URL (postgresql+psycopg://USER@HOST/DB) and give it to PostgreSQL with "
            "PGPASSFILE or ~/.pgpass of the service user, or PGPASSWORD in the environment "
            "(e.g. the systemd EnvironmentFile)",
        )
    elif parsed.get_backend_name() == "postgresql" and not _postgres_tls_checked(parsed):
        # As for IMAP and SMTP: consultations never cross a network in clear, and the
        # server's certificate is checked (libpq's default "prefer" falls back to plain
        # text and checks nothing; review rv9b F4).
        db.fail(
            "url",
            f"PostgreSQL on {parsed.host} without a checked TLS connection: add "
            "?sslmode=verify-full to the URL (and sslrootcert=/path/to/ca.pem when the "
            "server's certificate is not signed by a CA the system trusts); plain "
            "connections are for the same machine only (localhost or a socket)",
        )
    return url


def _postgres_tls_checked(url: Any) -> bool:
    """Whether a PostgreSQL URL reaches its server over TLS with the certificate and host
    name checked, or stays on this machine (a Unix socket, a loopback address)."""
    hosts = [url.host] if url.host else []
    query_host = url.query.get("host")
    if query_host:
        hosts += [query_host] if isinstance(query_host, str) else list(query_host)
    if all(h.startswith("/") or is_loopback(h) for h in hosts):
        return True  # no host (the default socket), a socket folder or loopback
    # In the URL, not PGSSLMODE: staff commands read the same config from a shell that
    # lacks the service's environment, and must connect the same way.
    return url.query.get("sslmode") == "verify-full"


def settings_from_dict(
    data: dict[str, Any], path: Path | None = None, text: str | None = None
) -> Settings:
    """Build Settings from parsed TOML; relative paths are relative to the config file.

    ``text`` (the file's TOML) gives problems their line. Every problem is collected and
    raised at the end as one ``ConfigProblems``.
    """
    base = path.parent if path else Path.cwd()
    source = _Source(path, text)
    mb = _Section(source, "mailbox", data.get("mailbox", {}))
    mb_host = mb.get("host", str, required=True)
    mb_security = _security(mb, mb_host)
    mailbox = MailboxSettings(
        host=mb_host,
        port=mb.get("port", int, {"tls": 993}.get(mb_security, 143)),
        security=mb_security,
        username=mb.get("username", str, required=True),
        password=_secret(mb, base, required=True),
        folder=mb.get("folder", str, "INBOX"),
        cafile=_existing(mb, "cafile", _path(base, mb.get("cafile", str, None))),
        timeout=mb.get("timeout", float, 30.0),
        idle=mb.get("idle", bool, True),
        idle_seconds=mb.get("idle_seconds", float, 30.0),
        poll_interval=mb.get("poll_interval", float, 60.0),
        batch_size=mb.get("batch_size", int, 100),
        move_to=mb.get("move_to", str, None) or None,
        id=mb.get("id", str, None) or None,
    )
    for key, value in (
        ("timeout", mailbox.timeout),
        ("idle_seconds", mailbox.idle_seconds),
        ("poll_interval", mailbox.poll_interval),
        ("batch_size", mailbox.batch_size),
    ):
        if key in mb.data and value <= 0:
            mb.fail(key, f"must be greater than 0, got {value}")
    if not 1 <= mailbox.port <= 65535 and "port" in mb.data:
        mb.fail("port", f"must be a port number from 1 to 65535, got {mailbox.port}")
    if mailbox.idle_seconds > 25 * 60:
        # RFC 2177: a server may end an IDLE after 30 minutes without telling the client
        mb.fail("idle_seconds", f"must be at most 1500 (25 minutes), got {mailbox.idle_seconds}")
    sm = _Section(source, "smtp", data.get("smtp", {}))
    sm_host = sm.get("host", str, required=True)
    sm_security = _security(sm, sm_host)
    sm_password = _secret(sm, base)
    if sm.data.get("username") and sm_password.env is None and sm_password.file is None:
        # aiosmtplib would log in with an empty password and the relay refuse every mail
        sm.fail(
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
        cafile=_existing(sm, "cafile", _path(base, sm.get("cafile", str, None))),
        timeout=sm.get("timeout", float, 30.0),
    )
    if not 1 <= smtp.port <= 65535 and "port" in sm.data:
        sm.fail("port", f"must be a port number from 1 to 65535, got {smtp.port}")
    database_url = _database_url(_Section(source, "database", data.get("database", {})), base)
    oc = _Section(source, "oncall", data.get("oncall", {}))
    oncall = OncallSettings(
        to=oc.addresses("to"),
        backup=oc.addresses("backup"),
        off_hours=oc.addresses("off_hours"),
        escalate_after_minutes=_whole(oc, "escalate_after_minutes", 30, minimum=0),
        escalate_every_minutes=_whole(oc, "escalate_every_minutes", 30, minimum=0),
        escalate_max=_whole(oc, "escalate_max", 3, minimum=0),
    )
    if oncall.escalate_max and oncall.escalate_every_minutes == 0:
        oc.fail("escalate_every_minutes", "must be > 0 to repeat (or escalate_max = 0)")
    if not oncall.to:
        oc.fail("to", "at least one on-call address is needed for urgent alerts")
    elif oncall.lone:
        # A warning, not a refusal: refusing here would also stop `run` of a working
        # installation after an upgrade, and a worker that does not start alerts nobody.
        # `check` and every start of the service print it until a backup is added.
        log.warning(
            "%s: oncall.backup: no backup address besides oncall.to; if the mail server "
            "refuses an urgent alert for good (a mistyped or deleted on-call address), "
            'nobody is told of the case. Add backup = ["..."] under [oncall]',
            path or "<config>",
        )
    if smtp.from_address and ("@" not in smtp.from_address or smtp.from_address.startswith("@")):
        sm.fail("from_address", f"must be a mail address, got {smtp.from_address!r}")
    own = {a.lower() for a in (smtp.from_address, mailbox.username) if "@" in a}
    for key, values in (
        ("to", oncall.to),
        ("backup", oncall.backup),
        ("off_hours", oncall.off_hours),
    ):
        for address in values:
            if address.strip().lower() in own:
                # the service reads that mailbox and keeps its own mail for staff, who read
                # it in office hours: a night alert there reaches nobody awake
                oc.fail(
                    key,
                    f"{address!r} is the service's own address (smtp.from_address or the "
                    "mailbox it reads): alerts sent there reach nobody; give the on-call "
                    "person's own address",
                )
    sv = _Section(source, "service", data.get("service", {}))
    tzname = sv.get("timezone", str, "Asia/Tokyo")
    try:
        tz = ZoneInfo(tzname)
    except Exception:
        sv.fail("timezone", f"unknown time zone {tzname!r}")
        tz = ZoneInfo("Asia/Tokyo")
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
        coordinator=sv.addresses("coordinator"),
        digest_times=sv.strings("digest_times", ("09:00", "14:00")),
        office_open=sv.get("office_open", str, "08:30"),
        office_close=sv.get("office_close", str, "16:30"),
        closures=sv.strings("closures"),
        retention_days=_whole(
            _Section(source, "retention", data.get("retention", {})), "keep_days", 365, minimum=1
        ),
        salt_file=_path(
            base, _Section(source, "report", data.get("report", {})).get("salt_file", str, None)
        ),
        prepare_processes=_prepare_processes(sv),
        last_good_rules_dir=_path(base, sv.get("last_good_rules_dir", str, None)),
        state_dir=_path(base, sv.get("state_dir", str, None)),
    )
    _check_service(sv, settings)
    _unknown_keys(source, data)
    if source.problems:
        raise ConfigProblems(sorted(source.problems, key=_line_in), settings)
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
                sv.fail(key, f'times are "HH:MM" (00:00–23:59), got {value!r}')
    both = _HHMM.match(s.office_open) and _HHMM.match(s.office_close)
    if both and s.office_open >= s.office_close:
        sv.fail("office_close", f"must be after office_open ({s.office_open})")
    if s.max_message_bytes <= 0:
        sv.fail("max_message_mb", "must be at least 1")
    if s.ack_window_hours < 0:
        sv.fail("ack_window_hours", "must be 0 or more")
    for value in s.closures:
        if not re.match(r"^(\d{4}-)?\d{2}-\d{2}$", value):
            sv.fail("closures", f'days are "YYYY-MM-DD" or "MM-DD", got {value!r}')


def config_path(path: Path | str | None = None) -> Path | None:
    """The config to read: ``path``, else ``$INTAKE_CONFIG``, else None (none given).

    One resolution for every command, ``check`` included, so that ``check`` validates the
    file the worker will load (the systemd unit sets only INTAKE_CONFIG).
    """
    if path is None or path == "":
        path = os.environ.get("INTAKE_CONFIG") or None
    return Path(path) if path is not None else None


def load_settings(path: Path | str | None = None) -> Settings:
    """Load the config named by ``path`` or ``$INTAKE_CONFIG``."""
    p = config_path(path)
    if p is None:
        raise ConfigError("no config given: pass --config PATH or set INTAKE_CONFIG")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return settings_from_dict(data, p.resolve(), text)
