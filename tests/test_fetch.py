"""Pure logic of the IMAP edge (``intake.fetch``); the Dovecot tests are in test_worker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from intake.config import MailboxSettings, Secret
from intake.fetch import Mailbox


def _mailbox(known: int | None, record: dict[str, list[bytes]]) -> Mailbox:
    mailbox = Mailbox(
        MailboxSettings(
            host="127.0.0.1", port=1, security="plain", username="u", password=Secret(env="X")
        )
    )
    fake: Any = SimpleNamespace(_imap=SimpleNamespace(untagged_responses=record))
    mailbox.client = fake
    mailbox._exists = known
    return mailbox


def test_an_unchanged_exists_repeated_by_the_server_is_not_news() -> None:
    """Some servers repeat EXISTS on every NOOP: taking that as news would make the worker
    poll without pause."""
    record = {"EXISTS": [b"5"], "RECENT": [b"0"]}
    mailbox = _mailbox(5, record)
    assert not mailbox._news_reported()
    assert record == {}  # forgotten: imaplib's record does not grow for the worker's life


def test_a_higher_count_is_news() -> None:
    mailbox = _mailbox(5, {"EXISTS": [b"6"]})
    assert mailbox._news_reported()
    assert mailbox._exists == 6


def test_a_mail_that_arrives_as_another_is_expunged_is_news() -> None:
    """Same count as before, but one of them is new: the EXPUNGE lowered the known count."""
    mailbox = _mailbox(6, {"EXPUNGE": [b"2"], "EXISTS": [b"6"]})
    assert mailbox._news_reported()


def test_exists_and_expunge_in_one_record_leave_the_count_unknown() -> None:
    """imaplib loses their order: "* 2 EXISTS" (a poll) then "* 1 EXPUNGE" (our own MOVE)
    must not leave the count one too high, or the next mail (announced as "* 1 EXISTS")
    would look like no news and wait out the IDLE."""
    mailbox = _mailbox(1, {"EXISTS": [b"2"], "EXPUNGE": [b"1"]})
    assert mailbox._news_reported()
    record = mailbox.client._imap.untagged_responses  # type: ignore[union-attr]
    record["EXPUNGE"] = [b"1"]
    assert not mailbox._news_reported()
    record["EXISTS"] = [b"1"]
    assert mailbox._news_reported()


def test_an_expunge_alone_is_not_news_but_lowers_the_count() -> None:
    mailbox = _mailbox(6, {"EXPUNGE": [b"2"]})
    assert not mailbox._news_reported()
    assert mailbox._exists == 5
    mailbox.client._imap.untagged_responses["EXISTS"] = [b"6"]  # type: ignore[union-attr]
    assert mailbox._news_reported()  # a new mail brings it back to 6


def test_without_a_known_count_any_exists_is_news() -> None:
    assert _mailbox(None, {"EXISTS": [b"3"]})._news_reported()


def test_a_whole_folder_is_fetched_in_batches_of_bounded_bytes() -> None:
    """skip-existing reads every mail once to hash it: large attachments must not be held
    200 at a time, and a mail larger than the bound still goes, alone."""
    from intake.pipeline import SKIP_FETCH_BYTES, SKIP_FETCH_MAILS, _by_size

    part = SKIP_FETCH_BYTES * 3 // 4  # two of these do not fit in one batch
    sizes = {1: 3000, 2: part, 3: part, 4: 3 * SKIP_FETCH_BYTES, 5: 3000}
    assert _by_size([1, 2, 3, 4, 5], sizes) == [[1, 2], [3], [4], [5]]
    small = list(range(1, 2 * SKIP_FETCH_MAILS + 2))
    batches = _by_size(small, dict.fromkeys(small, 3000))
    assert [len(b) for b in batches] == [SKIP_FETCH_MAILS, SKIP_FETCH_MAILS, 1]
