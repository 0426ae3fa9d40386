"""Find Japanese phone numbers in a consultation so the on-call person can call back.

Residents write numbers in full-width digits, with hyphens of every kind, or with none:
NFKC folds widths, and the pattern accepts the common separators.
"""

from __future__ import annotations

import re
import unicodedata

# Public: intake.digest masks numbers written with any of these for partners that may not
# see the sender, so its mask can never be narrower than what is found here.
DASHES = "-‐‑‒–—―−ー－"
# Not inside a longer number, not the digits of one of our case numbers (C000123 2026-1-1
# read as 000123-2026), not after a time (0:00 1000-5000円 read as 00-1000-5000).
_PHONE = re.compile(
    r"(?<![\dC])(?<!\d:)(0[789]0[" + DASHES + r"\s]?\d{4}[" + DASHES + r"\s]?\d{4}"  # mobile
    r"|0\d{1,4}[" + DASHES + r"\s(（]?\d{1,4}[" + DASHES + r"\s)）]?\d{4})(?!\d)"  # fixed
)


def find_phones(text: str) -> list[str]:
    """Phone numbers in ``text``, normalised to ASCII digits and hyphens, in order, unique."""
    folded = unicodedata.normalize("NFKC", text)
    found: list[str] = []
    for m in _PHONE.finditer(folded):
        digits = re.sub(r"\D", "", m.group(0))
        if not 10 <= len(digits) <= 11:
            continue
        parts = re.split(r"[^\d]+", m.group(0).strip())
        number = "-".join(p for p in parts if p) if len(parts) > 1 else digits
        if number not in found:
            found.append(number)
    return found
