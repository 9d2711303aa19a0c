"""RFC 3464 notices: structure checked with the standard library's MIME parser."""

from __future__ import annotations

from email import message_from_bytes
from email.message import Message

from sealmail.mta.bounce import BounceRequest, FailedRecipient, build_bounce

ORIGINAL = b"From: a@x.test\r\nSubject: hello\r\n\r\n" + b"body line\r\n" * 10


def notice(**fields: object) -> Message:
    values: dict[str, object] = {
        "queue_id": "BCDF1234GHJK", "sender": "alice@example.org", "arrival": 1_700_000_000.0,
        "reporting_mta": "mx.example.com", "original": ORIGINAL,
        "failed": (FailedRecipient("bob@example.com", "team@example.com", "5.1.1",
                                   "550 5.1.1 <bob@example.com>: User unknown",
                                   "lmtp.example.com"),
                   FailedRecipient("carol@example.com", "carol@example.com", "4.4.1",
                                   "connect to lmtp.example.com: Connection refused")),
    }
    values.update(fields)
    data = build_bounce(BounceRequest(**values), now=1_700_000_500.0)  # type: ignore[arg-type]
    assert b"\n" not in data.replace(b"\r\n", b"")
    return message_from_bytes(data)


def test_multipart_report_structure() -> None:
    message = notice()
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message["To"] == "alice@example.org"
    assert message["Auto-Submitted"] == "auto-replied"
    parts = message.get_payload()
    assert isinstance(parts, list)
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "message/rfc822"]


def test_delivery_status_fields() -> None:
    status = notice().get_payload()[1]
    blocks = status.get_payload()  # the stdlib splits per-message and per-recipient groups
    per_message, bob, carol = blocks
    assert per_message["Reporting-MTA"] == "dns; mx.example.com"
    assert per_message["Arrival-Date"]
    assert bob["Final-Recipient"] == "rfc822; bob@example.com"
    assert bob["Original-Recipient"] == "rfc822; team@example.com"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Remote-MTA"] == "dns; lmtp.example.com"
    assert bob["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    assert carol["Status"] == "4.4.1"
    assert carol["Original-Recipient"] is None


def test_headers_only_for_ret_hdrs_and_large_messages() -> None:
    for message in (notice(return_headers_only=True), notice(size_limit=50)):
        returned = message.get_payload()[2]
        assert returned.get_content_type() == "text/rfc822-headers"
        assert "body line" not in returned.as_string()
    full = notice().get_payload()[2]
    assert "body line" in full.as_string()


def test_envid_is_reported() -> None:
    per_message = notice(envid="QQ314159").get_payload()[1].get_payload()[0]
    assert per_message["Original-Envelope-Id"] == "QQ314159"


def test_smtputf8_mail_gets_the_global_types() -> None:
    """RFC 6533: message/global-delivery-status, utf-8 address types, message/global."""
    failed = (FailedRecipient("δοκιμή@παράδειγμα.δοκιμή", "δοκιμή@παράδειγμα.δοκιμή", "5.6.7",
                              "SMTPUTF8 is required, but was not offered by host h"),
              FailedRecipient("bob@example.com", "bob@example.com", "5.1.1", "unknown"))
    data = build_bounce(BounceRequest("BCDF1234GHJK", "jürgen@bücher.example", 1.0,
                                      "mx.example.com", failed, ORIGINAL, smtputf8=True), 2.0)
    text = data.decode()
    assert "Content-Type: message/global-delivery-status" in text
    assert "X-Postfix-Sender: utf-8; jürgen@bücher.example" in text
    assert "Final-Recipient: utf-8; δοκιμή@παράδειγμα.δοκιμή" in text
    assert "Final-Recipient: rfc822; bob@example.com" in text
    assert "Content-Type: message/global\r\n" in text
    plain = build_bounce(BounceRequest("BCDF1234GHJK", "a@x.test", 1.0, "mx.example.com",
                                       failed[1:], ORIGINAL), 2.0).decode()
    assert "message/global" not in plain
