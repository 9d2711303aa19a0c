"""The header of an Internet message (RFC 5322 2.2) read as octets, shared by the IMAP core and
the store: where the header ends, and its fields cut out as sent.

Both are one regular expression, and both read a header as `sealmail.proto.imap.mime` parses
it (property-tested there): a field is a line starting with a name and a colon, with the lines
folded under it; other lines are skipped; the header ends at the first line that is empty once
its CRs are ignored, or with the message.
"""

from __future__ import annotations

import functools
import re

__all__ = ["header_fields", "message_header"]

_NAME = rb"[!-9;-~]+[ \t]*:"
_FIELD_NAME = re.compile(rb"[!-9;-~]+")
_REST_OF_FIELD = rb"[^\n]*(?:\n[ \t][^\n]*)*\n?"
# The header ends at the first line that is empty once its CRs are ignored: the first line of
# the message, or one after a LF (two patterns: an alternation at the start would keep `re`
# from scanning for the LF at C speed, ten times slower on a long header).
_EMPTY_FIRST_LINE = re.compile(rb"\r*(?:\n|\Z)")
_EMPTY_LINE = re.compile(rb"\n\r*(?:\n|\Z)")


def header_fields(header: bytes, names: tuple[str, ...], exclude: bool) -> bytes:
    """The fields of `header` named in `names` (or all others with `exclude`) as sent, plus the
    empty line: BODY[HEADER.FIELDS (...)] and BODY[HEADER.FIELDS.NOT (...)] (RFC 9051 6.4.5).

    One regular expression over the block, made once per list of names: mail clients ask for
    the same few fields of every message of a folder, and a loop per line cost more than the
    rest of such a FETCH.
    """
    kept = _fields_pattern(names, exclude).findall(header)
    if kept and not kept[-1].endswith(b"\n"):  # only a field ending the block can lack one
        kept[-1] += b"\r\n"
    return b"".join(kept) + b"\r\n"


@functools.lru_cache(maxsize=64)
def _fields_pattern(names: tuple[str, ...], exclude: bool) -> re.Pattern[bytes]:
    """Matches whole fields (name, colon, line, folded lines) named in `names`, compared
    without regard to ASCII case, or, with `exclude`, every other field."""
    encoded = (n.encode("utf-8", "replace") for n in names)
    # A name that is not a field name ("Bad Name", quoted by the client) names no field.
    alternatives = b"|".join(re.escape(n) for n in encoded if _FIELD_NAME.fullmatch(n)) or b"(?!)"
    wanted = b"(?:" + alternatives + b")[ \t]*:"
    name = b"(?!" + wanted + b")" + _NAME if exclude else wanted
    return re.compile(b"^" + name + _REST_OF_FIELD, re.MULTILINE | re.IGNORECASE)


def message_header(raw: bytes) -> bytes:
    """BODY[HEADER] of a whole message (its empty line included) without parsing its
    structure: the block `sealmail.proto.imap.parse_message` takes as the header."""
    match = _EMPTY_FIRST_LINE.match(raw) or _EMPTY_LINE.search(raw)
    return raw if match is None else raw[: match.end()]
