"""Review rv10c of this session's changes: acknowledging by code from a forwarded phone, a
resident answering a counsellor's quoted question. Real Dovecot and SMTP; synthetic mail.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from intake import samples
from intake.escalate import ACK_EVENT, escalate
from intake.localservers import LocalDovecot, LocalSMTP
from tests.test_staff_replies import JST, alerted_case, cases, events, once, service, subject


@pytest.mark.integration
def test_threaded_reply_from_personal_phone_with_code_acknowledges(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The on-call box forwarded (server redirect keeps Message-ID) to a personal phone;
    the phone's reply keeps In-Reply-To AND the subject with the code. It must acknowledge
    as the same reply without thread headers does."""
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    alert = alerted_case(svc, dovecot, smtp_server, base)
    phone = "taro.oncall@docomo.ne.jp"
    dovecot.append(
        samples.consultation(
            phone,
            "Re: " + subject(alert),
            "対応します。",
            in_reply_to=str(alert.message["Message-ID"]),
        )
    )
    once(svc, base + timedelta(minutes=5))
    acks = events(svc, ACK_EVENT)
    print("events alert-reply:", [(e.detail) for e in events(svc, "alert-reply")])
    assert [c.number for c in cases(svc)] == ["C000001"]
    assert len(acks) == 1, "threaded reply keeping the code did not acknowledge"
    assert escalate(svc, base + timedelta(minutes=31)) == 0


@pytest.mark.integration
def test_resident_answering_no_to_a_counsellors_risk_question_raises_no_alert(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """City staff answered the resident from the shared mailbox (sasaean@…), asking the
    standard risk question. The resident answers 'no', quoting it with '>'. The words
    quoted are the counsellor's, not a friend's: no alert should go to on-call."""
    from tests.test_quoted_review_pipeline import _svc
    from tests.test_quoted_urgency import RESIDENT, _alerts, _read

    svc = _svc(tmp_path, dovecot, smtp_server, monkeypatch)
    try:
        dovecot.append(
            samples.consultation(
                RESIDENT,
                "相談",
                "学校に行くのがつらいです。どうしたらいいですか。",
                message_id="<first-1@example.jp>",
            )
        )
        _read(svc)
        assert _alerts(smtp_server) == []
        reply = (
            "いいえ、そこまではないです。\n\n"
            "2027年1月6日(水) 9:50 笠岡市 相談窓口 <sasaean@city.kasaoka.okayama.jp>:\n"
            "> メールありがとうございます。担当の山本です。\n"
            "> 失礼な質問でしたらごめんなさい。死にたいと思うことはありますか？\n"
            "> よかったら教えてください。\n"
        )
        dovecot.append(
            samples.consultation(
                RESIDENT,
                "Re: 相談",
                reply,
                in_reply_to="<staff-reply-1@city.kasaoka.okayama.jp>",
                headers={
                    "References": "<first-1@example.jp> <staff-reply-1@city.kasaoka.okayama.jp>"
                },
            )
        )
        _read(svc)
        alerts = _alerts(smtp_server)
        assert alerts == [], "the counsellor's own question, quoted back, alerted on-call"
    finally:
        svc.close()


@pytest.mark.integration
def test_a_headerless_auto_reply_from_a_forwarded_phone_does_not_acknowledge(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The on-call box forwards to a personal phone whose 'driving mode' auto-reply
    (no Auto-Submitted, no thread headers) answers 'Re: <subject>'. Nobody read the alert."""
    svc = service(tmp_path, dovecot, smtp_server, monkeypatch)
    base = datetime.now(JST)
    alert = alerted_case(svc, dovecot, smtp_server, base)
    phone = "taro.oncall@docomo.ne.jp"
    dovecot.append(
        samples.consultation(phone, "Re: " + subject(alert), "【自動返信】ただいま運転中です。")
    )
    once(svc, base + timedelta(minutes=5))
    acks = events(svc, ACK_EVENT)
    assert acks == [], "an auto-reply acknowledged the alert"
    assert escalate(svc, base + timedelta(minutes=31)) == 1
