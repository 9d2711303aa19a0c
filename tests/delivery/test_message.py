from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealmail.delivery import message as msg
from sealmail.store.errors import InvalidMessage

GOOD = b"From: a@example.com\r\nSubject: hi\r\n  folded\r\n\r\nbody \xe2\x82\xac\r\n"


def test_a_good_message_passes() -> None:
    msg.validate(GOOD)
    msg.validate(b"")  # nothing to object to
    msg.validate(b"Subject: headers only\r\n")
    msg.validate(b"\r\nbody without headers\r\n")


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"\n\r"]), max_size=12))
def test_line_ends_are_refused_exactly_when_one_is_bare(parts: list[bytes]) -> None:
    """validate's two-pass line-end check (issue 18) against the definition: every CR and LF
    is part of a CRLF."""
    body = b"".join(parts)
    crlf = body.count(b"\r\n")
    bare = body.count(b"\r") != crlf or body.count(b"\n") != crlf
    raised = None
    try:
        msg.validate(b"\r\n" + body)  # no header: only the line ends are judged
    except InvalidMessage as exc:
        raised = str(exc)
    assert raised == ("Message contains bare newlines" if bare else None)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"Subject: x\r\n\r\nnul \x00 here\r\n", "NUL"),
        (b"Subject: x\r\n\r\nbare\nnewline\r\n", "bare newlines"),
        (b"Subject: x\r\n\r\nbare\rcr\r\n", "bare newlines"),
        (b"this is not a header\r\n\r\nbody\r\n", "invalid header"),
        (b" starts folded\r\n\r\nbody\r\n", "invalid header"),
        (b"Subject: x\r\n: no name\r\n\r\n", "invalid header"),
    ],
)
def test_what_the_store_refuses(content: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        msg.validate(content)


def test_return_path_fields_are_removed_with_their_continuations() -> None:
    content = (
        b"Return-Path: <old@example.com>\r\nSubject: s\r\nreturn-path:\r\n <x@y>\r\n\r\n"
        b"Return-Path: in the body stays\r\n"
    )
    assert msg.without_return_path(content) == (
        b"Subject: s\r\n\r\nReturn-Path: in the body stays\r\n"
    )
    assert msg.without_return_path(GOOD) is GOOD


def test_message_id() -> None:
    assert msg.message_id(b"Subject: x\r\nMessage-ID:\r\n <a@b>\r\n\r\n") == "<a@b>"
    assert msg.message_id(b"X-Original-Message-ID: <no@no>\r\n\r\n") is None
    assert msg.message_id(b"Subject: x\r\n\r\nMessage-ID: <body@no>\r\n") is None
    assert msg.message_id(b"message-id: <lower@case>\r\n") == "<lower@case>"


def test_trace_headers_are_one_block_for_all_recipients() -> None:
    trace = msg.trace_headers(
        return_path="s@example.com",
        helo="mx.example.com",
        client="[127.0.0.1]",
        servername="store.example.com",
        protocol="LMTPA",
        session_id="S1",
        now=0,
    )
    text = trace.decode()
    assert text.startswith("Return-Path: <s@example.com>\r\nReceived: from mx.example.com")
    assert "by store.example.com (sealmail lmtpd) with LMTPA id S1;" in text
    msg.validate(trace + GOOD)


@given(st.binary(max_size=300))
def test_never_crashes(content: bytes) -> None:
    with contextlib.suppress(InvalidMessage):
        msg.validate(content)
    msg.message_id(content)
    msg.without_return_path(content)


@pytest.mark.parametrize(
    ("received", "queue_id"),
    [
        (b"Received: from a (a [127.0.0.1])\r\n\tby mx.example.com (Postfix) with ESMTP id"
         b" 4Q1x2y3Z5kz9\r\n\tfor <b@example.com>; Sun,  6 Dec 2026 05:20:20 +0000\r\n",
         "4Q1x2y3Z5kz9"),
        (b"Received: by mx (sealmail, from userid 0)\r\n\tid HG5D2MX29HGC; Sun, 6 Dec 2026\r\n",
         "HG5D2MX29HGC"),
        (b"Received: from a by b; Sun, 6 Dec 2026\r\n", None),
        (b"", None),
    ],
)
def test_mta_queue_id_from_the_topmost_received(received: bytes, queue_id: str | None) -> None:
    content = received + b"Received: by older id OLDER12345; x\r\nSubject: x\r\n\r\nbody\r\n"
    expected = queue_id if received else "OLDER12345"
    assert msg.mta_queue_id(content) == expected
