"""Reply rendering (RFC 5321 4.2, RFC 2034 3)."""

from __future__ import annotations

import pytest

from sealmail.proto.smtp import Reply


def test_single_line() -> None:
    assert Reply(250, "2.1.5", "Ok").render() == b"250 2.1.5 Ok\r\n"
    assert Reply(250, "2.1.5", "Ok").render(enhanced=False) == b"250 Ok\r\n"
    assert Reply(220, None, "host ready").render() == b"220 host ready\r\n"


def test_multi_line() -> None:
    reply = Reply(250, None, ("host", "PIPELINING", "SIZE"))
    assert reply.render() == b"250-host\r\n250-PIPELINING\r\n250 SIZE\r\n"
    assert Reply(550, "5.1.1", ("a", "b")).render() == b"550-5.1.1 a\r\n550 5.1.1 b\r\n"


def test_empty_text() -> None:
    assert Reply(250, "2.0.0", "").render() == b"250 2.0.0\r\n"
    assert Reply(250).render() == b"250\r\n"


@pytest.mark.parametrize(
    ("code", "enhanced", "text", "message"),
    [
        (199, None, "x", "200..599"),
        (250, "5.1.1", "x", "does not match"),
        (250, "2.1", "x", "malformed"),
        (250, "2.1.1234", "x", "malformed"),
        (250, None, "a\r\n250 forged", "CR or LF"),
        (250, None, ("ok", "b\n"), "CR or LF"),
    ],
)
def test_bad_replies(code: int, enhanced: str | None, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Reply(code, enhanced, text)
