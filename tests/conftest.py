"""Shared fixtures: real mail servers on 127.0.0.1 for integration tests.

``dovecot``          a plain (no TLS) private Dovecot with IDLE, empty INBOX, per test.
``dovecot_factory``  start variants: ``dovecot_factory(tls="imaps")``, ``(tls="starttls")``,
                     ``(idle=False)``; every server it started is stopped at teardown.
``smtp_server``      a recording ``LocalSMTP`` (aiosmtpd) per test.
``smtp_factory``     start variants: ``smtp_factory(starttls=True)``.
``held_port``        a loopback port held for the test (``reserve_port``): refused until
                     ``serve_smtp(handler, held_port)`` listens on it (a relay coming back).
``rules``            the repository's ``rules/`` loaded once for the whole run; tests must not
                     change it (a module that needs other rules defines its own ``rules``).
``rules_without_learned``  the same rules without the learned tier, also loaded once: for
                     tests that show what the rule tiers do on their own.

Every server is stopped at teardown, also when the test failed; a failed test's report
shows the tail of each Dovecot log (as "Captured stdout teardown"). Tests that use them
should carry ``@pytest.mark.integration``.

``SOUDAN_INTAKE_CACHE_DIR`` is set for the whole run (to the cache the service would use
anyway when unset) and the urgency model is trained into it once, before the first test:
tests that start ``service.py`` in a subprocess then do not each train a model of their
own (~15 s, a minute on a loaded CI machine) inside their "within N seconds" waits.

When the ``dovecot`` binary is missing the Dovecot fixtures skip with the reason on a
developer machine, but FAIL under CI (``CI`` set and not "0"/"false"): a CI run that
silently skipped every IMAP test would look green while proving nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from intake import localservers
from intake.localpostgres import LocalPostgres, LocalPostgresError, postgres_binary_dir
from intake.localservers import LocalDovecot, LocalSMTP, reserve_port
from intake.rules import RuleSet, load_rules


def running_under_ci() -> bool:
    """True when the ``CI`` environment variable says so (``CI=true`` in .ci/run)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_dovecot() -> None:
    """Skip (developer machine) or fail (CI) the calling test when Dovecot is missing."""
    if localservers.dovecot_binary() is not None:
        return
    hint = "install Debian's dovecot-imapd (apt-get install dovecot-imapd; see .ci/run)"
    if running_under_ci():
        pytest.fail(f"dovecot binary not found under CI: {hint}", pytrace=False)
    pytest.skip(f"dovecot binary not found: {hint}")


@pytest.fixture(scope="session", autouse=True)
def _warm_model_cache() -> None:
    """Train the urgency model once per run into the cache every process of the run uses.

    Why: on a fresh machine (CI) the cache is empty, and the first ``service.py run`` of a
    test trained the model before it read any mail: ~15 s on an idle machine, over 30 s
    under load, which is longer than a worker test waits for its first acknowledgement
    (seen failing under load). Subprocess tests that fall back to a cache folder of their
    own (``tmp_path / "cache"`` when the variable is unset) trained again at every start.
    A training problem is left for the tests that load rules to report.
    """
    from intake.config import PROJECT_ROOT
    from intake.errors import RulesError
    from intake.learned import CACHE_ENV, cache_dir, load_model

    os.environ.setdefault(CACHE_ENV, str(cache_dir()))
    with contextlib.suppress(RulesError):
        load_model(PROJECT_ROOT / "rules")


@pytest.fixture(scope="session")
def rules() -> RuleSet:
    """The shipped rules, loaded once per run.

    Why one load: ``load_rules`` compiles thousands of patterns and loads the urgency model
    (~3 s, more on a loaded machine), and seventeen test modules each loaded the same rules
    for themselves. Tests only read it; classify fills its bounded caches, as in the worker.
    """
    from intake.config import PROJECT_ROOT

    return load_rules(PROJECT_ROOT / "rules")


@pytest.fixture(scope="session")
def rules_without_learned() -> RuleSet:
    """The shipped rules with the learned tier switched off: a rule-tier gap must not be
    hidden by the safety net, which may not know the next wording. A separate load, so
    that switching the tier off never leaks into ``rules``."""
    from intake.config import PROJECT_ROOT

    loaded = load_rules(PROJECT_ROOT / "rules")
    loaded.learned = None
    return loaded


def _show_log(server: LocalDovecot) -> None:
    """Print Dovecot's log tail; pytest shows captured teardown output only on failure."""
    print(f"Dovecot {server.host}:{server.port} tls={server.tls} idle={server.idle}")
    print(server.log_tail(40))


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[LocalDovecot]:
    """A started plain Dovecot (IDLE on) under ``tmp_path``; stopped at teardown."""
    require_dovecot()
    server = LocalDovecot(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
        _show_log(server)


@pytest.fixture
def dovecot_factory(tmp_path: Path) -> Iterator[Callable[..., LocalDovecot]]:
    """Start Dovecot variants: ``dovecot_factory(tls="imaps", idle=False, ...)``.

    Keyword arguments go to ``LocalDovecot``; each server gets its own folder under
    ``tmp_path``. All of them are stopped at teardown.
    """
    require_dovecot()
    started: list[LocalDovecot] = []

    def start(**kwargs: Any) -> LocalDovecot:
        server = LocalDovecot(tmp_path / f"imap{len(started)}", **kwargs)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.cleanup()
            _show_log(server)


@pytest.fixture
def smtp_server() -> Iterator[LocalSMTP]:
    """A started recording SMTP server on 127.0.0.1; stopped at teardown."""
    with LocalSMTP() as server:
        yield server


@pytest.fixture
def smtp_factory(tmp_path: Path) -> Iterator[Callable[..., LocalSMTP]]:
    """Start SMTP variants: ``smtp_factory(starttls=True, require_starttls=True)``."""
    started: list[LocalSMTP] = []

    def start(**kwargs: Any) -> LocalSMTP:
        kwargs.setdefault("cafile_dir", tmp_path)
        server = LocalSMTP(**kwargs)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.close()


@pytest.fixture
def held_port() -> Iterator[socket.socket]:
    """A bound, not listening socket on 127.0.0.1 (``.getsockname()[1]`` is the port).

    Connections are refused and no other program can take the port until
    ``serve_smtp(handler, held_port)`` listens on it; closed at teardown (closing again
    after the server closed it is harmless). A port merely found free could belong to
    someone else's server by the time the test's relay "comes back".
    """
    with contextlib.closing(reserve_port()) as sock:
        yield sock


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """One private PostgreSQL for the whole run (each test takes its own database);
    skipped without PostgreSQL, failed under CI."""
    if postgres_binary_dir() is None:
        hint = "install Debian's postgresql-15 (see .ci/system-packages)"
        if running_under_ci():
            pytest.fail(f"PostgreSQL not found under CI: {hint}", pytrace=False)
        pytest.skip(f"PostgreSQL not found: {hint}")
    try:
        server = LocalPostgres().start()
    except LocalPostgresError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()
