"""Checks and trace headers for a message entering the store.

The store keeps messages as CRLF text (IMAP serves them byte-exact); like Cyrus we refuse what would
make it lie about the message: NUL bytes, bare LF or CR line ends, and a header block that is not
a header block (RFC 5322 2.2). Everything else, 8-bit included, is kept as sent.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate

from sealmail.store.errors import InvalidMessage

_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
# Each starts with its field's name in lower case: `_search` finds it in a lower-cased header.
_RETURN_PATH = re.compile(rb"return-path[ \t]*:", re.IGNORECASE)
_MESSAGE_ID = re.compile(rb"^message-id[ \t]*:", re.IGNORECASE | re.MULTILINE)
_RECEIVED = re.compile(rb"^received[ \t]*:", re.IGNORECASE | re.MULTILINE)
_RECEIVED_ID = re.compile(r"\bid\s+([0-9A-Za-z]{6,32})\b")


def header_block(content: bytes) -> bytes:
    """The header lines of a CRLF message, without the blank line that ends them."""
    if content.startswith(b"\r\n"):
        return b""
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[: end + 2]


def validate(content: bytes) -> None:
    """Raise InvalidMessage (554 5.6.0) for what the store must not keep."""
    if b"\0" in content:
        raise InvalidMessage("Message contains NUL characters")
    if not _only_crlf(content):
        raise InvalidMessage("Message contains bare newlines")
    first = True
    for line in header_block(content).split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            if first:
                raise InvalidMessage("Message contains invalid header")
        elif not _FIELD.match(line):
            raise InvalidMessage("Message contains invalid header")
        first = False


# Every octet but CR and LF: `translate` deletes them in one C pass.
_NOT_CR_LF = bytes(octet for octet in range(256) if octet not in (0x0D, 0x0A))
# A CR that some other octet follows (`re` scans for the literal CR in C).
_CR_ALONE = re.compile(rb"\r[^\n]")


def _only_crlf(content: bytes) -> bool:
    """True when every CR and LF in `content` is part of a CRLF.

    Two C passes instead of CRLF's count (a two-octet search: ~90 us a 100 KiB message, more
    than half of validate's time, issue 18). The CRs and LFs alone must read CRLF CRLF ...: k of
    each, and the last one an LF, so no CR ends the content. Then if no CR has another octet
    after it, every CR has its own LF, which are all k LFs: none is bare."""
    ends = content.translate(None, _NOT_CR_LF)
    if ends != b"\r\n" * (len(ends) // 2):  # an odd count differs in length
        return False
    return _CR_ALONE.search(content) is None


def without_return_path(content: bytes) -> bytes:
    """The message without Return-Path fields: the delivering server sets it (RFC 5321 4.4)."""
    headers = header_block(content)
    if _search(headers, _RETURN_PATH) is None:
        return content
    kept: list[bytes] = []
    skipping = False
    for line in headers.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = bool(_RETURN_PATH.match(line))
        if not skipping:
            kept.append(line)
    rest = content[len(headers) :]
    return b"".join(line + b"\r\n" for line in kept) + rest


def message_id(content: bytes) -> str | None:
    """The Message-ID field's value, unfolded and stripped, or None."""
    return _first_field(content, _MESSAGE_ID)


def mta_queue_id(content: bytes) -> str | None:
    """The queue ID in the topmost Received: field, which the MTA that hands the message over
    wrote (Postfix's and sealmail's cleanup: `by host (Postfix) with ESMTP id 4Q1x2y3Z`): lmtpd
    logs it, so that an operator (and `sealmail trace`) can join the two halves' logs."""
    received = _first_field(content, _RECEIVED)
    if received is None:
        return None
    found = _RECEIVED_ID.search(received)
    return found.group(1) if found else None


def _first_field(content: bytes, name: re.Pattern[bytes]) -> str | None:
    """The first field called `name`, unfolded and stripped, or None."""
    headers = header_block(content)
    match = _search(headers, name)
    if match is None:
        return None
    value = bytearray()
    at = match.end()
    while True:  # its first line and those folded under it, not the rest of the header
        end = headers.find(b"\r\n", at)
        if end < 0:
            value += headers[at:]
            break
        value += headers[at:end]
        at = end + 2
        if headers[at : at + 1] not in (b" ", b"\t"):
            break
    text = value.decode("utf-8", "replace").strip()
    return text or None


def _search(headers: bytes, field: re.Pattern[bytes]) -> re.Match[bytes] | None:
    """`field.search(headers)` for a pattern that starts with a field name in lower case, tried
    only where that name is (bytes.find on the lower-cased header): an IGNORECASE pattern
    has no literal prefix for `re` to scan for, and tried at every octet it cost ~10 us per
    KiB of header (real mail's header: several Received and DKIM fields)."""
    name = _NAME_OF[field]
    lowered = headers.lower()  # ASCII only, as IGNORECASE on bytes: the offsets stay the same
    at = lowered.find(name)
    while at >= 0:
        if (match := field.match(headers, at)) is not None:
            return match
        at = lowered.find(name, at + 1)
    return None


_NAME_OF = {
    _RETURN_PATH: b"return-path",
    _MESSAGE_ID: b"message-id",
    _RECEIVED: b"received",
}


def trace_headers(
    *,
    return_path: str,
    helo: str | None,
    client: str,
    servername: str,
    protocol: str,
    session_id: str,
    now: float | None = None,
) -> bytes:
    """Return-Path and Received fields, the same for every recipient so one copy serves all."""
    date = _received_date(int(time.time() if now is None else now))
    received = (
        f"Received: from {helo or 'unknown'} ({client})\r\n"
        f"\tby {servername} (sealmail lmtpd) with {protocol} id {session_id};\r\n"
        f"\t{date}\r\n"
    )
    return f"Return-Path: <{return_path}>\r\n{received}".encode("utf-8", "surrogateescape")


_last_date: tuple[int, str] = (-1, "")


def _received_date(second: int) -> str:
    """formatdate(second, localtime=True), remembered for the current second (the email
    package's formatting is a large part of a small delivery's CPU)."""
    global _last_date
    last = _last_date  # one read: another thread may replace it meanwhile
    if last[0] != second:
        last = _last_date = (second, formatdate(second, localtime=True))
    return last[1]
