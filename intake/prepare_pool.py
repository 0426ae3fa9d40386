"""Prepare pool: the pure per-message work of a large batch, in worker processes.

Contract:
    input   the raw bytes of a batch's stored messages, in mailbox order, and the
            in-process function that prepares one (``pipeline._attempt``);
    output  for each message, in the same order, exactly what that function returns:
            a ``pipeline._Prepared`` (parse, triage, route, phones) or a ``Failed`` with
            the stage that raised and the exception's class name, as quarantine records it;
    never   touches the database, the network or the clock, and never logs mail content.

Why processes: parsing and triage (MeCab, rules) are CPU-bound Python and hold the GIL;
the database writes stay in the worker process, in mailbox order, so every guarantee of
``intake.pipeline`` holds unchanged. Only the pipeline calls this, and only for a batch
of at least ``pipeline.POOL_MIN_BATCH`` messages, so a lone urgent mail in IDLE never
waits on inter-process traffic: ``process_new_mail`` hands the next batch over
(``submit``) before it writes the current one, ``_prepare_batch`` takes the outcomes
(``collect``) or, for a first batch, does both at once (``prepare``), before the batch's
write transaction opens. A ``Failed`` from a child is tried once more in the worker.

How:
- Children are started with "forkserver", never "fork": the worker runs APScheduler and
  SQLAlchemy threads, and a forked copy of a lock held by one of them would deadlock.
  Each child builds what ``_prepare`` needs once, in the pool initializer, from the
  (picklable) ``Settings``: the rules (``load_rules``; the learned model comes from its
  disk cache), the partner directory and the sender address. A child also watches its
  parent and exits when the parent dies, so a ``kill -9`` of the worker leaves no orphans.
- Same rules as the worker: the worker passes ``rules_fingerprint`` of the rules it
  loaded and the folder it loaded them from (the last good copy of
  ``intake.last_good_rules`` when the live rules are broken, so the pool keeps working
  then); a child that finds other rules there (staff edited ``rules/`` without a
  restart) refuses all work (``StaleRules``), and the pool is switched off until the
  worker restarts, with one warning, so no batch is triaged with rules the worker lacks.
- The pool is started lazily, on the first large batch, and lives as long as the
  ``Service`` (``close()``, which waits at most ``CLOSE_GRACE`` for the children and then
  kills them; a finalizer closes it if nobody did).
- The batch is cut into small chunks, submitted in order. When the worker needs the
  outcomes, it takes chunks no child has started yet from the end of the batch and does
  them itself, so it does not sit idle while work waits in the queue; it then waits
  only for the chunks in flight. Chunks of mail that turned out to be stored already
  (a read-ahead batch during a rescan) are cancelled, never done in the worker.
- Measured (``bench/bench_ingest.py --without-pool-too``, 3,000 mails, one child on the
  2 shared vCPUs): between 0.85x and 1.30x the rate without the pool in the same run,
  depending on whether another process held the second CPU; CPU per mail is ~1 ms
  higher (pickling the results, the child's start-up) and a child adds ~95 MB of PSS.
  The pool pays where the worker has CPUs of its own.
- A child that dies (``BrokenProcessPool``), an error in the pool machinery or a batch
  that exceeds ``timeout`` (counted from ``collect``, so a read-ahead batch is not charged
  for the time the batch before it took to write) makes the batch fall back to in-process
  work for whatever is missing (a warning without mail content is logged); the pool is
  restarted on the next large batch, and switched off for the life of the process after
  ``MAX_FAILURES`` failures in a row. No message is ever lost or prepared twice into the
  result.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import multiprocessing
import os
import threading
import time
import weakref
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from intake.config import Settings

log = logging.getLogger(__name__)

MAX_FAILURES = 3
DEFAULT_TIMEOUT = 120.0  # seconds for one batch, child start-up included
MAX_CHUNK = 4  # messages a task: the worker waits for at most the chunks in flight
CLOSE_GRACE = 2.0  # seconds ``close`` lets the children finish before killing them


@dataclass(frozen=True)
class Failed:
    """A stage raised: its name and the exception's class name (never its message, which
    may quote the mail)."""

    stage: str
    error: str


# The child's own context, built once by ``_start_child`` (one per child process).
_CHILD: Any = None
# Set by ``_start_child`` when the rules on disk are not the ones the worker loaded.
_STALE = False


class StaleRules(Exception):
    """A child found rules on disk other than those the worker loaded (staff edited
    ``rules/`` since the worker started): it prepares nothing, so no batch is triaged
    with rules the rest of the worker does not use."""


def rules_files(rules_dir: Path) -> list[tuple[str, bytes]]:
    """The files ``rules_fingerprint`` covers, as (relative POSIX name, bytes), sorted.

    Hidden files and editor backups (``.x.swp``, ``x~``) are left out: a staff member
    with a rule file open in an editor has not changed the rules yet. Raises ``OSError``
    when the folder cannot be read. Shared with ``intake.last_good_rules``, which saves
    exactly these bytes, so a saved copy has the fingerprint of the rules it copies."""
    paths = sorted(
        path
        for path in Path(rules_dir).rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(rules_dir).parts)
        and not path.name.endswith("~")
    )
    return [(path.relative_to(rules_dir).as_posix(), path.read_bytes()) for path in paths]


def files_fingerprint(files: Sequence[tuple[str, bytes]]) -> str:
    """SHA-256 over names and bytes of ``rules_files`` output (what ``rules_fingerprint``
    computes from the disk)."""
    digest = hashlib.sha256()
    for relative, data in files:
        name = relative.encode()
        digest.update(b"%d:%s%d:" % (len(name), name, len(data)))
        digest.update(data)
    return digest.hexdigest()


def rules_fingerprint(rules_dir: Path) -> str:
    """SHA-256 over the names and bytes of the files under ``rules_dir`` (``rules_files``).

    A folder that cannot be read gives a fingerprint of its own (compared, never trusted)."""
    try:
        return files_fingerprint(rules_files(rules_dir))
    except OSError as exc:
        digest = hashlib.sha256()
        digest.update(f"unreadable:{type(exc).__name__}".encode())
        return digest.hexdigest()


@dataclass
class _ChildContext:
    """What ``pipeline._prepare`` reads from a ``Service``, without a database or templates."""

    settings: Settings
    rules: Any
    directory: Any
    sender: Any

    @cached_property
    def staff(self) -> frozenset[str]:
        """As ``Service.staff``: computed once in the child, not for every mail."""
        from intake.pipeline import staff_addresses

        return staff_addresses(self.settings, self.directory)


def _start_child(
    settings: Settings, fingerprint: str | None = None, rules_dir: Path | None = None
) -> None:
    """Pool initializer: load rules and partners once, and die with the parent.

    ``fingerprint``: that of the rules the worker loaded (``rules_fingerprint``); a child
    that finds other rules on disk, before or after loading them, refuses all work
    (``StaleRules``) rather than triage with rules the worker does not have.
    ``rules_dir``: the folder the worker loaded them from, default ``settings.rules_dir``;
    the last rules that loaded (``intake.last_good_rules``) when the live ones are broken,
    so the children triage with the worker's rules, not fail on the broken ones."""
    global _CHILD, _STALE
    from intake.compose import Sender
    from intake.partners import load_directory
    from intake.rules import load_rules

    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with_parent, args=(parent.sentinel,), name="parent-watch", daemon=True
        ).start()
    folder = rules_dir or settings.rules_dir
    if fingerprint is not None and rules_fingerprint(folder) != fingerprint:
        _STALE = True
        return
    _CHILD = _ChildContext(
        settings=settings,
        rules=load_rules(folder),
        directory=load_directory(folder / "partners.toml"),
        sender=Sender(settings.smtp.from_address, settings.smtp.from_name),
    )
    # The rules and the analyser live as long as the child: frozen, the cyclic garbage
    # collector stops rescanning their ~180,000 objects at every full collection
    # (measured on bench mail: prepare 3.0 -> 2.7 ms CPU a mail).
    if fingerprint is not None and rules_fingerprint(folder) != fingerprint:
        _STALE = True  # edited while this child loaded them
        _CHILD = None
        return
    gc.collect()
    gc.freeze()


def _exit_with_parent(sentinel: int) -> None:
    """Block until the parent process is gone, then end this child at once."""
    from multiprocessing.connection import wait as wait_for

    wait_for([sentinel])
    os._exit(0)


def _run_chunk(work: Callable[[list[bytes]], list[Any]], raws: list[bytes]) -> list[Any]:
    """In a child: ``work`` on a chunk, unless this child's rules are stale."""
    if _STALE:
        raise StaleRules
    return work(raws)


def _prepare_chunk(raws: list[bytes]) -> list[Any]:
    """In a child: ``pipeline._attempt`` for each raw message, in order."""
    from intake.pipeline import _attempt

    return [_attempt(_CHILD, raw) for raw in raws]


def _stop(executor: ProcessPoolExecutor, kill: bool = False, grace: float = CLOSE_GRACE) -> None:
    """Shut an executor down without ever waiting on a hung child for good.

    Chunks no child has started are cancelled; the children get ``grace`` seconds to end
    the chunk in hand and exit, and any still running then is killed (``kill``: at once,
    for a pool already known to be broken or hung). ``shutdown(wait=True)`` would block
    the worker's shutdown and ``once``'s exit for as long as a hung child hangs.
    """
    # ProcessPoolExecutor has no public way to end a running child, nor a bounded wait.
    processes = list((getattr(executor, "_processes", None) or {}).values())
    manager = getattr(executor, "_executor_manager_thread", None)
    executor.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + (0.0 if kill else grace)
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            with contextlib.suppress(Exception):  # gone in the meantime
                process.kill()
    for process in processes:
        process.join(grace)  # reap it: no zombie left behind
    if manager is not None:
        manager.join(grace)  # it notices the children are gone and ends


@dataclass
class Ticket:
    """A batch handed to the pool: its raw messages, chunk bounds and futures."""

    raws: list[bytes]
    bounds: list[tuple[int, int]]
    futures: list[Future[list[Any]] | None]
    executor: ProcessPoolExecutor | None
    # Seconds ``collect`` waits for the children, counted from the collect, not from the
    # submit: a read-ahead batch waits while the batch before it is written, however long
    # that takes, and that wait is no fault of the children.
    timeout: float


class PreparePool:
    """A persistent pool of ``processes`` children preparing messages for one ``Settings``.

    Cheap to create: no process starts before the first ``prepare`` call.
    """

    def __init__(
        self,
        settings: Settings,
        processes: int,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        work: Callable[[list[bytes]], list[Any]] = _prepare_chunk,
        fingerprint: str | None = None,
        rules_dir: Path | None = None,
    ) -> None:
        """``work`` is what a child runs on a chunk: a module-level function (it is sent
        by name); tests pass one that crashes or hangs, to prove the fallback.
        ``fingerprint``: ``rules_fingerprint`` of the rules the caller loaded, taken when
        it loaded them (``Service.from_settings``); by default, of the rules on disk now.
        ``rules_dir``: where the caller loaded them from (default ``settings.rules_dir``;
        the last good copy when the live rules are broken: ``intake.last_good_rules``)."""
        self.settings = settings
        self.rules_dir = rules_dir or settings.rules_dir
        self.fingerprint = fingerprint or rules_fingerprint(self.rules_dir)
        self.processes = processes
        self.timeout = timeout
        self.work = work
        self.failures = 0  # pool failures in a row
        self.batches = 0  # batches handed to the children (a figure for tests and benchmarks)
        self.disabled = processes <= 0
        self._executor: ProcessPoolExecutor | None = None
        self._finalizer: weakref.finalize | None = None

    def _ensure(self) -> ProcessPoolExecutor:
        if self._executor is None:
            context = multiprocessing.get_context("forkserver")
            # The fork server preloads nothing (not even ``__main__``): measured, modules
            # preloaded there are mostly copied into the child anyway (reference counts
            # dirty their pages), so preloading only added the server's own copy (~35 MB).
            context.set_forkserver_preload([])
            self._executor = ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=context,
                initializer=_start_child,
                initargs=(self.settings, self.fingerprint, self.rules_dir),
            )
            self._finalizer = weakref.finalize(self, _stop, self._executor)
        return self._executor

    def pids(self) -> list[int]:
        """Process ids of the running children (for tests and memory figures)."""
        if self._executor is None:
            return []
        processes = getattr(self._executor, "_processes", None) or {}
        return [p.pid for p in processes.values() if p.pid]

    def close(self) -> None:
        """Stop the children, killing any still busy after ``CLOSE_GRACE`` seconds (a hung
        child must not hold up the worker's shutdown); the next ``prepare`` starts new ones."""
        if self._finalizer is not None:
            self._finalizer()  # runs _stop once
        self._finalizer = None
        self._executor = None

    def _fail(self, why: str, executor: ProcessPoolExecutor | None) -> None:
        """Drop a broken pool (restarted on the next batch) and count the failure.

        ``executor`` is the pool the failure came from: a ticket submitted to a pool that
        an earlier failure already dropped counts nothing more.
        """
        if executor is not self._executor:
            return
        self.failures += 1
        log.warning(
            "prepare pool failed; preparing the batch in this process",
            extra={"error": why, "failures": self.failures},
        )
        self._forget_executor()
        if executor is not None:
            _stop(executor, kill=True)
        if self.failures >= MAX_FAILURES:
            self.disabled = True
            log.warning("prepare pool switched off after repeated failures",
                        extra={"failures": self.failures})  # fmt: skip

    def _forget_executor(self) -> None:
        """No current pool (the caller stops the old one): the next batch starts a new one."""
        self._executor = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def _refuse(self, executor: ProcessPoolExecutor | None) -> None:
        """The children found other rules on disk than the worker's: switch the pool off
        for the life of this worker (its rules stay what they are until it restarts), with
        one warning, and let everything be prepared in this process with the worker's
        rules. Not a failure of the children: nothing is counted."""
        if self.disabled:
            return
        self.disabled = True
        log.warning(
            "rules on disk changed since the worker loaded them; the prepare pool is off "
            "until the worker restarts (restart it to apply the new rules)"
        )
        if executor is self._executor:
            self._forget_executor()
        if executor is not None:
            _stop(executor, kill=True)

    def submit(self, raws: Sequence[bytes]) -> Ticket:
        """Hand ``raws`` to the children in small chunks, in order; returns at once.

        The pipeline submits the next batch before it writes the current one, so the
        children prepare while this process writes. ``collect`` the ticket, or
        ``discard`` it."""
        n = len(raws)
        size = max(1, min(MAX_CHUNK, n // (4 * (self.processes + 1))))
        bounds = [(i, min(n, i + size)) for i in range(0, n, size)]
        ticket = Ticket(list(raws), bounds, [None] * len(bounds), None, self.timeout)
        if self.disabled or n == 0:
            return ticket
        try:
            ticket.executor = self._ensure()
            for k, (lo, hi) in enumerate(bounds):
                ticket.futures[k] = ticket.executor.submit(
                    _run_chunk, self.work, ticket.raws[lo:hi]
                )
            self.batches += 1
        except Exception as exc:  # BrokenProcessPool, or the fork server failed to start
            self.discard(ticket)
            self._fail(type(exc).__name__, ticket.executor)
        return ticket

    def discard(self, ticket: Ticket) -> None:
        """Cancel what no child has started of an unwanted ticket (e.g. the lock was lost)."""
        for future in ticket.futures:
            if future is not None:
                future.cancel()
        ticket.futures = [None] * len(ticket.bounds)

    def collect(
        self,
        ticket: Ticket,
        local: Callable[[bytes], Any],
        *,
        steal: bool = True,
        wanted: Collection[bytes] | None = None,
    ) -> list[Any]:
        """One outcome per submitted message, in order, as ``local`` would compute it.

        ``wanted``: the messages still to process (a batch read ahead may hold mail that
        turns out to be stored already, e.g. when a recreated folder is rescanned): the
        others come back as None, their chunks are cancelled or not waited for, never
        computed here. While the children work, this process takes wanted chunks none of
        them has started, from the end backwards (``steal=False``: none; tests compare
        the children's results with in-process ones). Whatever the pool cannot deliver
        within the ticket's ``timeout`` from now (a dead or hung child) is computed here
        with ``local``.
        """
        deadline = time.monotonic() + ticket.timeout
        raws, bounds, futures = ticket.raws, ticket.bounds, ticket.futures
        needed = [wanted is None or any(raw in wanted for raw in raws[lo:hi]) for lo, hi in bounds]
        results: list[list[Any] | None] = [None] * len(bounds)

        def here(k: int) -> list[Any]:
            lo, hi = bounds[k]
            return [local(raw) if wanted is None or raw in wanted else None
                    for raw in raws[lo:hi]]  # fmt: skip

        for k, future in enumerate(futures):
            if not needed[k]:
                if future is not None:
                    future.cancel()  # a child may have started it: then it is not awaited
                futures[k] = None
                results[k] = [None] * (bounds[k][1] - bounds[k][0])
        for k in range(len(bounds) - 1, -1, -1):
            future = futures[k]
            if not needed[k]:
                continue
            if future is not None and (not steal or not future.cancel()):
                break
            results[k] = here(k)
            futures[k] = None
        pending = [f for f in futures if f is not None]
        if pending:
            done, not_done = wait(pending, timeout=max(0.0, deadline - time.monotonic()))
            failure: str | None = "timeout" if not_done else None
            stale = False
            for k, future in enumerate(futures):
                if future is None or future not in done or future.cancelled():
                    continue
                try:
                    results[k] = future.result()
                except BrokenProcessPool:
                    failure = "BrokenProcessPool"
                except StaleRules:
                    stale = True
                except Exception as exc:  # e.g. a result that could not be pickled
                    failure = failure or type(exc).__name__
            if stale:
                self._refuse(ticket.executor)
            elif failure is not None:
                self._fail(failure, ticket.executor)
            elif ticket.executor is self._executor:
                self.failures = 0
        ticket.futures = [None] * len(bounds)
        for k in range(len(bounds)):
            if results[k] is None:
                results[k] = here(k)
        outcomes = [outcome for chunk in results for outcome in chunk or []]
        if wanted is not None:
            # A chunk a child did holds every message of it, wanted or not: as promised,
            # the unwanted ones come back as None whoever computed them.
            outcomes = [o if raw in wanted else None for raw, o in zip(raws, outcomes, strict=True)]
        return outcomes

    def prepare(
        self, raws: Sequence[bytes], local: Callable[[bytes], Any], *, steal: bool = True
    ) -> list[Any]:
        """``[local(raw) for raw in raws]``, computed by the children and this process."""
        return self.collect(self.submit(raws), local, steal=steal)
