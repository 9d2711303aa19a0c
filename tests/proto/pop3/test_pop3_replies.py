"""The one mapping of SASL failures to POP3 replies (store errors: tests/pop3/)."""

from __future__ import annotations

from sealmail.proto.pop3 import ResponseCode, sasl_failure
from sealmail.proto.sasl import FailureReason


def test_every_sasl_failure_has_a_reply() -> None:
    for reason in FailureReason:
        reply = sasl_failure(reason)
        assert not reply.ok
        expected = ResponseCode.SYS_TEMP if reason is FailureReason.TEMPORARY else ResponseCode.AUTH
        assert reply.code is expected
    # An unknown user and a wrong password must read the same (no user probing).
    assert (
        sasl_failure(FailureReason.BAD_CREDENTIALS).text == "authenticating: authentication failure"
    )
