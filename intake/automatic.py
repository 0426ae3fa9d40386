"""Automatic-mail detection: which mails must not get an acknowledgement.

Contract: ``automatic_reason(letter) -> str | None`` and ``spam_reason(letter) ->
str | None``; pure functions of an already parsed ``Letter``, never raise.

Why: RFC 3834 s. 2 says a responder must not answer automatic mail (mail loops,
answering a bounce, answering a mailing list). But a resident who writes to the
consultation mailbox and gets no answer is the worst outcome, so every signal here
is one that a person's own mail client does not set, and when in doubt we answer.

Each reason is a short machine string naming the evidence, e.g.
``auto-submitted:auto-replied``, ``precedence:bulk``, ``list-id``, ``null-sender``,
``bounce``, ``mdn``, ``noreply-sender``.
"""

from __future__ import annotations

import re

from intake.letter import Letter

__all__ = ["automatic_reason", "spam_reason"]

_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply", "auto-reply"})
_DAEMON_LOCALS = frozenset(
    {
        "mailer-daemon",
        "mailer_daemon",
        "mailerdaemon",
        "postmaster",
        "mail-daemon",
        "mdaemon",
        "majordomo",
        "listserv",
    }
)
_NOREPLY_LOCAL = re.compile(
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|dont[-_.]?reply)(?:[-+_.].*)?$"
)
# Subject prefixes that mail clients' auto-responders put in front of the original
# subject (Outlook localises them). Only the "prefix + colon" form counts: a resident
# may well write "自動返信について" but not start a subject with "自動返信:".
_AUTO_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic)?[ -]?(?:reply|response|antwort)|autoreply|out of (?:the )?office|"
    r"automatyczna odpowied[źz]|réponse automatique|automatische antwort|"
    r"respuesta automática|自動(?:返信|応答)(?:メッセージ)?|不在(?:通知|のお知らせ))\s*[:：]",
    re.I,
)
_AUTORESPONDER_HEADERS = ("x-autoreply", "x-autorespond", "x-auto-reply", "x-autoresponder")
# RFC 2369/2919 list headers, plus what list servers common in Japan (fml), Mailman 2
# and ezmlm add even when they omit the RFC ones.
_LIST_HEADERS = (
    "list-id",
    "list-unsubscribe",
    "list-post",
    "list-help",
    "mailing-list",
    "x-mailman-version",
    "x-ml-name",
    "x-mlserver",
    "x-ml-count",
    "x-sequence",
)
# List robots' command and bounce addresses. Not "-owner"/"owner-": that address is
# the list's human moderators, and carrier addresses are chosen freely
# (neko-owner@docomo.ne.jp is a resident; review rv9a). Mail a list server sends from it
# carries list headers or Precedence, checked above.
_ROBOT_LOCAL = re.compile(r"(?:-request|-bounces?)(?:\+.*)?$")


# Every reason ``automatic_reason`` gives, for those who read it back from the database
# (``intake.digest``: a bounce or an auto-reply threaded onto a case is never listed as
# the resident's 続報). ``tests/test_automatic.py`` holds the two in step.
AUTOMATIC_REASONS = frozenset(
    {
        "bounce",
        "mdn",
        "feedback-report",
        "report",
        "null-sender",
        "list-robot-sender",
        "noreply-sender",
        "auto-reply-subject",
        "exchange-generated",
        "delivered-to:mailing-list",
        "x-mailer:autoresponder",
        "x-apple-action:vacation",
        *_LIST_HEADERS,
        *_AUTORESPONDER_HEADERS,
    }
)
AUTOMATIC_PREFIXES = ("auto-submitted:", "daemon-sender:", "precedence:")


def is_automatic_reason(reason: str | None) -> bool:
    """Whether ``reason`` (as stored) is one ``automatic_reason`` gives."""
    return bool(reason) and (
        reason in AUTOMATIC_REASONS or str(reason).startswith(AUTOMATIC_PREFIXES)
    )


def _first(letter: Letter, name: str) -> str:
    value = letter.header(name)
    return value.strip() if value else ""


def automatic_reason(letter: Letter) -> str | None:
    """Why ``letter`` is automatic mail that must get no acknowledgement, or None.

    Checked, in order (RFC 3834 s. 2, s. 5; RFC 3464; RFC 8098; RFC 2369/2919):
    Auto-Submitted other than ``no``; bounces (multipart/report delivery-status or a
    recognised NDR); null sender (From ``<>`` or Return-Path ``<>``); MAILER-DAEMON /
    postmaster; read receipts (a disposition-notification report); Precedence
    bulk/junk/list/auto_reply; list headers; X-Autoreply/X-Autorespond; list-robot and
    noreply-style senders; Apple's vacation header; and an auto-responder subject prefix
    ("Automatic reply:", "自動返信:").
    """
    auto_submitted = _first(letter, "auto-submitted").lower()
    if auto_submitted and auto_submitted.split(";")[0].strip() != "no":
        return f"auto-submitted:{auto_submitted.split(';')[0].strip()}"
    if letter.bounce:
        return "bounce"
    content_type = _first(letter, "content-type").lower()
    if "multipart/report" in content_type:
        if "disposition-notification" in content_type:
            return "mdn"
        if "feedback-report" in content_type:
            return "feedback-report"
        return "report"
    return_path = _first(letter, "return-path")
    if return_path.replace(" ", "") == "<>":
        return "null-sender"
    if not letter.from_addr and re.search(r"<\s*>", _first(letter, "from")):
        return "null-sender"
    local = letter.from_addr.rpartition("@")[0].lower()
    if local in _DAEMON_LOCALS:
        return f"daemon-sender:{local}"
    precedence = _first(letter, "precedence").lower()
    if precedence in _PRECEDENCE:
        return f"precedence:{precedence}"
    for name in _LIST_HEADERS:
        if name in letter.headers:
            return name
    # Not a signal: Microsoft's X-Auto-Response-Suppress asks the *recipient* not to
    # auto-reply (MS-OXCMAIL), and Exchange puts it on people's mail too (mail sent to or
    # through a group, some school tenants), so a pupil writing from school Outlook went
    # unacknowledged (review rv9a F7). Outlook's own auto-replies carry Auto-Submitted and
    # the "自動応答:" subject, and a sender gets one acknowledgement a day at most anyway.
    for name in _AUTORESPONDER_HEADERS:
        if name in letter.headers and _first(letter, name).lower() not in ("no", "false", "0"):
            return name
    for value in letter.headers.get("delivered-to", []):
        if value.lower().startswith("mailing list"):  # ezmlm
            return "delivered-to:mailing-list"
    if _ROBOT_LOCAL.search(local):
        return "list-robot-sender"
    if _NOREPLY_LOCAL.match(local):
        return "noreply-sender"
    if _first(letter, "x-apple-action").lower() == "vacation":
        return "x-apple-action:vacation"
    if _AUTO_SUBJECT.match(letter.subject):
        return "auto-reply-subject"
    if _first(letter, "x-mailer").lower().startswith("autoresponder"):
        return "x-mailer:autoresponder"
    if "x-ms-exchange-generated-message-source" in letter.headers or (
        _first(letter, "x-ms-exchange-inbox-rules-loop")
    ):
        return "exchange-generated"
    return None


_SPAM_YES = re.compile(r"^\s*yes\b", re.I)


def spam_reason(letter: Letter) -> str | None:
    """The upstream filter's spam verdict, or None when there is none or it is unclear.

    Only explicit verdicts count (SpamAssassin's X-Spam-Flag / X-Spam-Status, rspamd's
    X-Spam, Microsoft's X-MS-Exchange-Organization-SCL >= 9, X-ASF-Spam-Status):
    a resident whose mail is wrongly dropped as spam gets no answer at all, which is
    worse than one stray acknowledgement, so scores and vague headers do not count.
    """
    for name in ("x-spam-flag", "x-spam-status", "x-spam", "x-asf-spam-status", "x-spam-verdict"):
        value = _first(letter, name)
        if value and _SPAM_YES.match(value):
            return f"{name}:yes"
    scl = _first(letter, "x-ms-exchange-organization-scl")
    if scl.lstrip("-").isdigit() and int(scl) >= 9:
        return "x-ms-exchange-organization-scl"
    return _content_spam(letter)


_URL = re.compile(r"https?://", re.I)
# Clear phishing: account-takeover wording AND a link to follow. Both are required, so a
# resident who mentions a suspended account or pastes a link is still acknowledged.
_PHISHING = re.compile(
    r"アカウント(?:が|を|は)?(?:一時)?(?:停止|凍結|ロック|制限)"
    r"|お支払い(?:方法|情報)(?:の|を)?(?:更新|確認)"
    r"|本人確認(?:が|を)?(?:必要|お願い|完了させて)"
    r"|verify your (?:account|identity)|your account (?:has been|will be) "
    r"(?:suspended|locked|limited)|unusual sign-?in activity|confirm your payment",
    re.I,
)
# Clear advertising: an opt-out line AND sales wording, as newsletters carry.
_OPT_OUT = re.compile(r"配信停止|配信解除|メルマガの解除|unsubscribe", re.I)
_SALES = re.compile(
    r"\d+\s*%\s*(?:OFF|オフ)|キャンペーン|セール|今だけ|限定価格|special offer", re.I
)


def _content_spam(letter: Letter) -> str | None:
    """Phishing or advertising only on unmistakable signs (two independent ones together)."""
    text = f"{letter.subject}\n{letter.text}"  # the sender's own words, not what they quote
    if not _URL.search(text):
        return None
    if _PHISHING.search(text):
        return "content:phishing"
    if _OPT_OUT.search(text) and _SALES.search(text):
        return "content:advertising"
    return None
