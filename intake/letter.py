"""The decoded form of one incoming mail, shared by every stage after ``parse``.

A ``Letter`` is what ``intake.parse.parse(raw: bytes)`` returns. It never holds
the raw bytes (the store keeps those); it holds what later stages need, already
decoded to ``str``, plus ``problems``: every fallback or defect met while decoding,
so that an uncertain decode is visible instead of silently wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Attachment:
    """Metadata of an attached part. Attachments are kept, never classified."""

    name: str
    content_type: str
    size: int


@dataclass
class Letter:
    """One parsed mail.

    ``text`` is the resident's own new words (quotes and signature removed): triage
    runs on it. ``quoted`` is the rest of the body. ``body`` is the whole decoded
    text body as it arrived, for storage and for staff.
    """

    from_addr: str = ""  # bare address, lower-cased domain; "" when absent or null ("<>")
    from_name: str = ""  # decoded display name
    to: list[str] = field(default_factory=list)
    subject: str = ""
    message_id: str | None = None  # with angle brackets, as in the header
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    date: datetime | None = None  # timezone-aware when the header carried a zone
    text: str = ""
    quoted: str = ""
    body: str = ""
    html_only: bool = False  # the text came from an HTML part
    # Text of forwarded messages (message/rfc822 parts, and mail forwarded inline under a
    # Gmail/iPhone/Outlook forward header) when the sender also wrote their own words: a
    # resident forwarding a friend's worrying mail. Kept apart from ``quoted`` (which may
    # hold our own acknowledgement) so the pipeline can check it for urgency on its own.
    forwarded: str = ""
    # Lines the splitter cut as a signature after "-- " (also in ``quoted``): the sender
    # wrote them, so the pipeline checks them for crisis words too.
    signature: str = ""
    # Quoted words that are not our own mail (also in ``quoted``): ">" lines of a friend's
    # mail passed on by replying to it or marked by the resident for emphasis, and the mail
    # below a reply header. The pipeline checks them for crisis words in a resident's mail.
    quoted_words: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    # Header names lower-cased -> every decoded value, in order. Used by automatic-mail
    # detection (RFC 3834), spam verdicts and loop detection.
    headers: dict[str, list[str]] = field(default_factory=dict)
    bounce: bool = False  # multipart/report delivery-status or a recognised NDR
    # A delivery-status report whose every recipient is only delayed (or delivered,
    # relayed), or a plain-text "still trying" warning from the mail system (Exim,
    # Postfix, sendmail wordings; ``parse._plain_delay_warning``): the mail system is
    # still trying, so the mail has not failed (yet).
    delivery_delayed_only: bool = False
    problems: list[str] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """First value of a header, or None. Name is case-insensitive."""
        values = self.headers.get(name.lower())
        return values[0] if values else None
