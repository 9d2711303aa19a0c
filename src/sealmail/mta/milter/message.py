"""A message as milters see and edit it: header fields, body, sender and recipients. Pure.

Postfix's rules, kept here:

- our own first header (the Received: that cleanup put on top) is not shown to milters, and
  header change indexes count without it, while insert indexes count with it (so a DKIM
  signature inserted at index 0 goes above it, preceding what it signs);
- a header is sent as name and value, the value without the one space after the colon (unless
  the milter negotiated SMFIP_HDR_LEADSPC), folded lines joined by LF (Sendmail's form); edits
  come back in that form and are written with CRLF;
- ADDHEADER appends; CHGHEADER with an empty value deletes, and for a header that is not there
  adds it; REPLBODY chunks replace the whole body; ADDRCPT/DELRCPT/CHGFROM change the envelope.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from sealmail.mta.queue import RecipientRecord
from sealmail.proto.milter import (
    BODY_CHUNK,
    AddHeader,
    AddRecipient,
    ChangeFrom,
    ChangeHeader,
    DeleteRecipient,
    Edit,
    InsertHeader,
    ReplaceBody,
)

_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _bare_address(value: bytes) -> str:
    text = value.decode("utf-8", "surrogateescape").strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text


@dataclass
class MilterMessage:
    headers: list[bytes]  # each field with its continuation lines and CRLF ends
    body: bytes
    sender: str
    recipients: list[RecipientRecord]
    ours: bytes | None = None  # our own top header, hidden from milters
    changed: bool = False
    _new_body: list[bytes] | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, content: bytes, sender: str, recipients: list[RecipientRecord],
              hide_first: bool = True) -> MilterMessage:
        headers: list[bytes] = []
        position, length = 0, len(content)
        while position < length:
            end = content.find(b"\r\n", position)
            end = length if end < 0 else end + 2
            line = content[position:end]
            if line in (b"\r\n", b""):
                position = end
                break
            if line[:1] in (b" ", b"\t") and headers:
                headers[-1] += line
            elif _FIELD.match(line):
                headers.append(line)
            else:
                break  # not a header: the body starts here (cleanup put no blank line)
            position = end
        ours = headers[0] if hide_first and headers else None
        return cls(headers, content[position:], sender, list(recipients), ours)

    def render(self) -> bytes:
        return b"".join(self.headers) + b"\r\n" + self.body

    # -- what milters are shown ---------------------------------------------------------------

    def _visible(self) -> Iterator[tuple[int, bytes]]:
        hidden = False
        for position, line in enumerate(self.headers):
            if not hidden and line is self.ours:
                hidden = True
                continue
            yield position, line

    def header_pairs(self, leading_space: bool) -> list[tuple[bytes, bytes]]:
        pairs = []
        for _, line in self._visible():
            name, _, value = line.partition(b":")
            value = value.rstrip(b"\r\n").replace(b"\r\n", b"\n")
            if not leading_space and value.startswith(b" "):
                value = value[1:]
            pairs.append((name.rstrip(b" \t"), value))
        return pairs

    def body_chunks(self) -> Iterator[bytes]:
        for start in range(0, len(self.body), BODY_CHUNK):
            yield self.body[start : start + BODY_CHUNK]

    # -- edits --------------------------------------------------------------------------------

    def _field(self, name: bytes, value: bytes, leading_space: bool) -> bytes:
        space = b"" if leading_space else b" "
        return _crlf(name + b":" + space + value).rstrip(b"\r\n") + b"\r\n"

    def apply(self, edits: list[Edit], leading_space: bool) -> None:
        """One milter's edits, in the order it sent them."""
        for edit in edits:
            self.changed = True
            if isinstance(edit, AddHeader):
                self.headers.append(self._field(edit.name, edit.value, leading_space))
            elif isinstance(edit, InsertHeader):
                at = min(edit.index, len(self.headers))
                self.headers.insert(at, self._field(edit.name, edit.value, leading_space))
            elif isinstance(edit, ChangeHeader):
                self._change(edit, leading_space)
            elif isinstance(edit, ReplaceBody):
                if self._new_body is None:
                    self._new_body = []
                self._new_body.append(edit.chunk)
            elif isinstance(edit, AddRecipient):
                address = _bare_address(edit.address)
                self.recipients.append(RecipientRecord(address, address))
            elif isinstance(edit, DeleteRecipient):
                gone = _bare_address(edit.address).lower()
                self.recipients = [r for r in self.recipients
                                   if gone not in (r.address.lower(), r.original.lower())]
            elif isinstance(edit, ChangeFrom):
                self.sender = _bare_address(edit.address)
        if self._new_body is not None:
            self.body = _crlf(b"".join(self._new_body))
            self._new_body = None

    def _change(self, edit: ChangeHeader, leading_space: bool) -> None:
        wanted = edit.name.lower()
        count = 0
        for position, line in self._visible():
            if line.partition(b":")[0].rstrip(b" \t").lower() != wanted:
                continue
            count += 1
            if count == max(edit.index, 1):
                if edit.value:
                    self.headers[position] = self._field(edit.name, edit.value, leading_space)
                else:
                    del self.headers[position]
                return
        if edit.value:
            self.headers.append(self._field(edit.name, edit.value, leading_space))
