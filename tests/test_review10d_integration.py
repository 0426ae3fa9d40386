"""Review rv10d of the last fixes over real Dovecot and aiosmtpd (each failed on 06418a5)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from intake import samples
from intake.escalate import ACK_EVENT, escalate
from intake.localservers import LocalDovecot, LocalSMTP
from tests.test_staff_replies import JST, alerted_case, events, once, service, subject


def _phone_reply(tmp_path, dovecot, smtp_server, monkeypatch, words):
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    alert = alerted_case(svc, dovecot, smtp_server, base)
    dovecot.append(samples.consultation("taro.oncall@docomo.ne.jp", "Re: " + subject(alert), words))
    once(svc, base + timedelta(minutes=5))
    return events(svc, ACK_EVENT), escalate(svc, base + timedelta(minutes=31))


@pytest.mark.integration
def test_person_reply_opening_with_auto_reply_bracket_acknowledges(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch
) -> None:
    acks, _escalated = _phone_reply(
        tmp_path, dovecot, smtp_server, monkeypatch, "【自動返信】の設定を切りました。対応します"
    )
    assert len(acks) == 1, "a person's real reply did not acknowledge"


@pytest.mark.integration
def test_auto_reply_with_other_brackets_does_not_acknowledge(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch
) -> None:
    acks, _escalated = _phone_reply(
        tmp_path, dovecot, smtp_server, monkeypatch, "≪自動返信≫ただいま運転中です。"
    )
    assert acks == [], "an automatic answer acknowledged the alert"


def _resident_mail(tmp_path, dovecot, smtp_server, monkeypatch, body):
    from tests.test_quoted_review_pipeline import _svc
    from tests.test_quoted_urgency import RESIDENT, _alerts, _read

    svc = _svc(tmp_path, dovecot, smtp_server, monkeypatch)
    try:
        dovecot.append(samples.consultation(RESIDENT, "相談", body))
        _read(svc)
        return _alerts(smtp_server)
    finally:
        svc.close()


@pytest.mark.integration
def test_friend_block_after_our_quoted_block_alerts(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch
) -> None:
    body = (
        "2027年1月6日(水) 9:50 笠岡市 相談窓口 <sasaean@city.kasaoka.okayama.jp>:\n"
        "> 死にたいと思うことはありますか？\n\n"
        "私はないです。でも友達からLINEでこう来ました\n\n"
        "> もう死にたい。今夜、家にある薬を全部飲むつもり。\n"
        "> 今までありがとう。\n"
    )
    alerts = _resident_mail(tmp_path, dovecot, smtp_server, monkeypatch, body)
    assert alerts, "the friend's crisis after our quoted question raised no alert"


@pytest.mark.integration
def test_friend_on_city_domain_alerts(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch
) -> None:
    body = (
        "友達からこんなメールが来ました。どうしたらいいですか。\n\n"
        "2027年1月6日(水) 9:50 山田 <yamada.k@city.kasaoka.okayama.jp>:\n"
        "> もう死にたい。今夜、家にある薬を全部飲むつもり。\n"
        "> 今までありがとう。\n"
    )
    alerts = _resident_mail(tmp_path, dovecot, smtp_server, monkeypatch, body)
    assert alerts, "a friend's crisis quoted from a city-domain address raised no alert"
