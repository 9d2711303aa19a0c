"""The message as Sieve sees it: headers decoded for comparison, addresses, body parts, and the
header edits of editheader (RFC 5293) applied to a copy the actions carry.

RFC 5228 section 2.7.2: header values are compared after unfolding, with leading and trailing
whitespace removed and RFC 2047 encoded words decoded. Only the header block is split here; the
body is parsed (stdlib `email`, no I/O) only when the body test asks for it.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import email.utils
from dataclasses import dataclass
from email.message import Message


@dataclass(frozen=True, slots=True)
class Address:
    """One parsed mailbox address; `local` and `domain` are "" when the part is missing."""

    local: str
    domain: str

    @property
    def full(self) -> str:
        return f"{self.local}@{self.domain}" if self.domain else self.local


def decode_header_value(raw: str) -> str:
    """Unfold, decode RFC 2047 words, strip: the value a Sieve comparison sees."""
    unfolded = raw.replace("\r\n", "").replace("\n", "").strip()
    if "=?" not in unfolded:
        return unfolded
    try:
        return str(email.header.make_header(email.header.decode_header(unfolded))).strip()
    except (ValueError, LookupError, UnicodeError):
        return unfolded


def parse_addresses(value: str) -> list[Address]:
    """The addresses in a header such as To or From; group names and comments are dropped."""
    out: list[Address] = []
    for _, addr in email.utils.getaddresses([value]):
        if not addr:
            continue
        out.append(split_address(addr))
    return out


def split_address(addr: str) -> Address:
    addr = addr.strip().removeprefix("<").removesuffix(">")
    local, at, domain = addr.rpartition("@")
    if not at:
        return Address(addr, "")
    return Address(local, domain)


class MessageView:
    """Headers in order (name, raw value as written, folded), the body, and edits to them."""

    def __init__(self, raw: bytes) -> None:
        self.original = raw
        split = _header_end(raw)
        head = raw[:split].decode("utf-8", "surrogateescape")
        self.separator_and_body = raw[split:]
        self.headers: list[tuple[str, str]] = []
        self.preamble: list[str] = []  # lines before the first header field (e.g. mbox "From ")
        current: list[str] | None = None
        for line in head.splitlines(keepends=True):
            if line[:1] in (" ", "\t") and current is not None:
                current.append(line)
                continue
            name, colon, _ = line.partition(":")
            if colon and name and " " not in name.strip() and name == name.rstrip():
                if current is not None:
                    self._push(current)
                current = [line]
            elif current is None:
                self.preamble.append(line)
            else:
                current.append(line)
        if current is not None:
            self._push(current)
        self.edited = False
        self._mime: Message | None = None

    def _push(self, lines: list[str]) -> None:
        text = "".join(lines)
        name, _, value = text.partition(":")
        self.headers.append((name, value))

    def values(self, name: str) -> list[str]:
        """Decoded values of every field called `name` (case-insensitive), in message order."""
        wanted = name.lower()
        return [decode_header_value(value) for field, value in self.headers
                if field.lower() == wanted]

    def has(self, name: str) -> bool:
        wanted = name.lower()
        return any(field.lower() == wanted for field, _ in self.headers)

    def render(self) -> bytes:
        """The message with every edit applied."""
        if not self.edited:
            return self.original
        head = "".join(self.preamble) + "".join(f"{n}:{v}" for n, v in self.headers)
        return head.encode("utf-8", "surrogateescape") + self.separator_and_body

    @property
    def size(self) -> int:
        return len(self.render())

    def mime(self) -> Message:
        if self._mime is None or self.edited:
            self._mime = email.message_from_bytes(self.render(), policy=email.policy.compat32)
        return self._mime

    def raw_body(self) -> str:
        """RFC 5173 :raw: the body octets after the blank line, undecoded."""
        body = self.separator_and_body
        for blank in (b"\r\n", b"\n"):
            if body.startswith(blank):
                body = body[len(blank):]
                break
        return body.decode("utf-8", "replace")

    def body_parts(self, types: tuple[str, ...] | None) -> list[str]:
        """RFC 5173 section 5: decoded text of the parts whose Content-Type matches `types`.

        `None` is :text (only text/* parts). A type is "type" or "type/subtype"; "" matches all.
        Multipart containers themselves contribute nothing but their leaves are searched.
        """
        out: list[str] = []
        for part in self.mime().walk():
            if part.is_multipart():
                continue
            maintype = part.get_content_maintype().lower()
            full = part.get_content_type().lower()
            if types is None:
                if maintype != "text":
                    continue
            elif not any(t == "" or t.lower() in (maintype, full) for t in types):
                continue
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            charset = part.get_content_charset() or "us-ascii"
            try:
                text = payload.decode(charset, "replace")
            except LookupError:
                text = payload.decode("utf-8", "replace")
            if full == "text/html" and types is None:
                text = _strip_tags(text)
            out.append(text)
        return out

    # editheader (RFC 5293)
    def add_header(self, name: str, value: str, last: bool) -> None:
        folded = " " + value.replace("\r\n", "\r\n ").strip(" ") + "\r\n"
        if last:
            self.headers.append((name, folded))
        else:
            self.headers.insert(0, (name, folded))
        self.edited = True

    def delete_header(self, positions: list[int]) -> None:
        for position in sorted(positions, reverse=True):
            del self.headers[position]
        if positions:
            self.edited = True

    def positions(self, name: str) -> list[int]:
        wanted = name.lower()
        return [i for i, (field, _) in enumerate(self.headers) if field.lower() == wanted]


def _header_end(raw: bytes) -> int:
    """Offset of the blank line that ends the header (or the end when there is no body)."""
    candidates = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    if raw.startswith((b"\r\n", b"\n")):
        return 0
    if not candidates:
        return len(raw)
    end = min(candidates)
    return end + (2 if raw[end:end + 2] == b"\r\n" else 1)


def _strip_tags(html: str) -> str:
    """RFC 5173 section 5.2 lets :text drop HTML markup; a crude pass is enough to match words."""
    out: list[str] = []
    inside = False
    for char in html:
        if char == "<":
            inside = True
        elif char == ">":
            inside = False
            out.append(" ")
        elif not inside:
            out.append(char)
    return "".join(out)
