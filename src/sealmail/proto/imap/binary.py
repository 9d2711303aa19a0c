"""A MIME part in binary form (RFC 3516, RFC 5524's URLFETCH BINARY): every base64 or
quoted-printable leaf below it decoded, its Content-Transfer-Encoding header saying "binary".

BINARY[n] of a leaf is its decoded body (`decode_part`); of a MESSAGE/RFC822 part it is the
embedded message with its own leaves converted, which is what Dovecot sends (imaptest's
urlauth-binary group). The structure of that form keeps each part's encoding name and gives
the sizes and line counts of the converted octets, as Dovecot's BODYPARTSTRUCTURE does.
"""

from __future__ import annotations

import dataclasses
import re

from sealmail.proto.imap.mime import BodyStructure, decode_part

__all__ = ["binary_entity", "binary_form"]

_CTE = re.compile(rb"(?im)^(content-transfer-encoding:)[ \t]*(?:base64|quoted-printable)"
                  rb"(?=[ \t]*\r?$)")
_CONVERTED = ("BASE64", "QUOTED-PRINTABLE")


def binary_form(raw: bytes, part: BodyStructure) -> tuple[bytes, BodyStructure]:
    """The content of `part` in binary form, and its structure with the sizes of that form.
    A leaf whose encoding cannot be undone stays as it is."""
    if part.message is not None:
        inner = part.message.body
        content, converted = binary_entity(raw, inner)
        data = raw[part.body_offset : inner.header_offset] + content + \
            raw[inner.end_offset : part.end_offset]
        message = dataclasses.replace(part.message, body=converted)
        return data, dataclasses.replace(part, size=len(data), lines=data.count(b"\n"),
                                         message=message)
    if part.children:
        pieces = []
        position = part.body_offset
        children = []
        for child in part.children:
            pieces.append(raw[position : child.header_offset])
            content, converted = binary_entity(raw, child)
            pieces.append(content)
            children.append(converted)
            position = child.end_offset
        pieces.append(raw[position : part.end_offset])
        data = b"".join(pieces)
        return data, dataclasses.replace(part, size=len(data), lines=data.count(b"\n"),
                                         children=tuple(children))
    decoded = decode_part(raw, part) if part.encoding in _CONVERTED else None
    if decoded is None:
        return raw[part.body_offset : part.end_offset], part
    return decoded, dataclasses.replace(part, size=len(decoded), lines=decoded.count(b"\n"))


def binary_entity(raw: bytes, part: BodyStructure) -> tuple[bytes, BodyStructure]:
    """Header and content of `part` in binary form (the header says so when it changed)."""
    header = raw[part.header_offset : part.body_offset]
    content, converted = binary_form(raw, part)
    if not part.children and part.message is None and part.encoding in _CONVERTED \
            and converted is not part:
        header = _CTE.sub(rb"\1 binary", header, count=1)
    return header + content, converted
