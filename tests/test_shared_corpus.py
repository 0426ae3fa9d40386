"""Run the decoder over the shared real-world corpus (199 mails from 12 projects).

The corpus lives outside the repository (``../shared/corpus``, GPL test data among
it) and is never copied in; a fresh clone has no ``../shared``, so the whole module
skips cleanly then. Expectations come from ``MANIFEST.jsonl`` (see its README):
never raise, the decoded Subject contains ``expect_subject_contains``, the body
(``letter.body``: first inline text/plain outside an attached message, else HTML)
contains ``expect_text_contains``, and ``automatic_reason(letter) is not None``
equals ``auto_generated`` where that is not null.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from intake.automatic import automatic_reason
from intake.parse import parse

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
MANIFEST = CORPUS / "MANIFEST.jsonl"

# Expectations we deliberately do not meet, each with the reason. Keep this tiny.
KNOWN_MISSES: dict[str, str] = {
    "rubymail__raw_email_trailing_dot.eml": (
        "auto_generated is false (a person's forum post relayed by a tracker), but the "
        "sender is noreply@rubyforge.org: we never acknowledge noreply senders (RFC 3834 "
        "practice, and our acknowledgement would bounce)."
    ),
}


def _entries() -> list[dict[str, Any]]:
    if not MANIFEST.is_file():
        return []
    return [json.loads(line) for line in MANIFEST.read_text("utf-8").splitlines() if line]


ENTRIES = _entries()

pytestmark = pytest.mark.skipif(not ENTRIES, reason=f"shared corpus not found at {CORPUS}")


def _params() -> list[Any]:
    params = []
    for entry in ENTRIES:
        marks = []
        if entry["file"] in KNOWN_MISSES:
            marks.append(pytest.mark.xfail(reason=KNOWN_MISSES[entry["file"]], strict=True))
        params.append(pytest.param(entry, id=entry["file"], marks=marks))
    return params


@pytest.mark.parametrize("entry", _params())
def test_corpus_mail_meets_its_manifest_expectations(entry: dict[str, Any]) -> None:
    raw = (CORPUS / "mails" / entry["file"]).read_bytes()
    letter = parse(raw)

    assert not [p for p in letter.problems if p.startswith("parse-error")]
    if entry["expect_subject_contains"] is not None:
        assert entry["expect_subject_contains"] in letter.subject
    if entry["expect_text_contains"] is not None:
        assert entry["expect_text_contains"] in letter.body
    if entry["auto_generated"] is not None:
        assert (automatic_reason(letter) is not None) == entry["auto_generated"]


def test_manifest_covers_every_mail_file() -> None:
    files = {p.name for p in (CORPUS / "mails").glob("*.eml")}
    assert files == {e["file"] for e in ENTRIES}


def test_known_misses_name_real_corpus_files() -> None:
    assert set(KNOWN_MISSES) <= {e["file"] for e in ENTRIES}


def test_mislabelled_bounces_record_their_charset_fallback() -> None:
    """The EUC-JP-under-ISO-2022-JP au bounces decode only by sniffing; say so."""
    for name in ("sisimai__lhost-ezweb-02.eml", "sisimai__lhost-ezweb-03.eml"):
        letter = parse((CORPUS / "mails" / name).read_bytes())
        assert "charset-fallback:iso-2022-jp->euc-jp-sniffed" in letter.problems
        assert letter.bounce
