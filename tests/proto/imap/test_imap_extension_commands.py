"""The issue 17 commands through the core: MULTIAPPEND / CATENATE, SORT RETURN, CANCELUPDATE,
GENURLAUTH, URLFETCH, RESETKEY, NOTIFY: each parsed whole and fed byte by byte, rendered back
to the same command, and their bad forms refused with BAD."""

from __future__ import annotations

import pytest

from sealmail.proto.imap import (
    NEED_DATA,
    CommandReceived,
    ConnectionState,
    ProtocolError,
    ServerConnection,
    StatusResponse,
)
from sealmail.proto.imap.errors import ImapError
from sealmail.proto.imap.parser import parse_command

GOOD = [
    b"a APPEND INBOX (\\Seen) {3}\r\nabc (\\Flagged) \"01-Jan-2020 00:00:00 +0000\" ~{2}\r\n\0x",
    b'a APPEND INBOX CATENATE (URL "/INBOX/;UID=1/;SECTION=HEADER" TEXT {4}\r\nbody) {1+}\r\nx',
    b"a APPEND INBOX CATENATE (TEXT ~{1}\r\n\0) CATENATE (URL /INBOX/;UID=2)",
    b"a SORT RETURN (MIN MAX COUNT ALL) (REVERSE ARRIVAL) US-ASCII ALL",
    b"a UID SORT RETURN (PARTIAL 1:10 UPDATE) (SUBJECT) UTF-8 SEEN",
    b"a SEARCH RETURN (PARTIAL 4:2 UPDATE CONTEXT) UNSEEN",
    b'a CANCELUPDATE "s1" "s2"',
    b'a GENURLAUTH "imap://u@h/INBOX/;UID=1;URLAUTH=authuser" INTERNAL "x" INTERNAL',
    b'a URLFETCH "u1" ("u2" BODYPARTSTRUCTURE BINARY) ("u3")',
    b"a RESETKEY",
    b"a RESETKEY INBOX INTERNAL",
    b"a NOTIFY NONE",
    b"a NOTIFY SET STATUS (SELECTED (MessageNew MessageExpunge)) (SUBTREE (A B) NONE)",
    b"a NOTIFY SET (MAILBOXES INBOX (MessageNew (UID BODY.PEEK[HEADER]) FlagChange))",
]


@pytest.mark.parametrize("wire", GOOD)
def test_whole_byte_by_byte_and_rendered_back(wire: bytes) -> None:
    data = wire + b"\r\n"
    command = parse_command(data)
    assert parse_command(command.render()) == command
    conn = ServerConnection(state=ConnectionState.SELECTED)
    got = NEED_DATA
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        got = conn.next_event()
        if got is not NEED_DATA:
            break
    assert got == CommandReceived(command)
    assert i == len(data) - 1


@pytest.mark.parametrize("wire", [
    b"a APPEND INBOX CATENATE (URL)", b"a APPEND INBOX CATENATE (TEXT)",
    b"a APPEND INBOX CATENATE URL x", b"a APPEND INBOX {1}\r\nx (\\Seen)",
    b"a SORT RETURN (PARTIAL) (ARRIVAL) UTF-8 ALL", b"a SORT RETURN (ALL (ARRIVAL) UTF-8 ALL",
    b"a SEARCH RETURN (PARTIAL 1:2:3) ALL", b"a CANCELUPDATE s1", b"a CANCELUPDATE",
    b"a GENURLAUTH u", b"a URLFETCH (u", b"a URLFETCH ((u))", b"a RESETKEY INBOX (x)",
    b"a NOTIFY SET STATUS", b"a NOTIFY SET (SUBTREE ())", b"a NOTIFY SET (PERSONAL MessageNew)",
    b"a NOTIFY SET (PERSONAL (MessageNew (NOSUCHITEM)))",
    b"a NOTIFY SET " + b" ".join([b"(PERSONAL NONE)"] * 51),
])
def test_bad_forms_are_bad(wire: bytes) -> None:
    with pytest.raises(ImapError) as error:
        parse_command(wire + b"\r\n")
    assert error.value.status == "BAD"
    assert error.value.tag == "a"


def test_trailing_bytes_after_a_command_are_the_next_command() -> None:
    conn = ServerConnection(state=ConnectionState.SELECTED)
    conn.receive_data(b'a CANCELUPDATE "x"\r\nb NOTIFY FOO\r\n')
    first = conn.next_event()
    assert isinstance(first, CommandReceived)
    assert conn.next_event() is NEED_DATA  # the first waits for its reply
    conn.send(StatusResponse("OK", "ok", "a"))
    assert isinstance(conn.next_event(), ProtocolError)
