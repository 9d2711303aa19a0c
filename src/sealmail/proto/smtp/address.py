"""Envelope addresses: RFC 5321 4.1.2 Path / Mailbox, and ESMTP parameters (4.1.2, 4.1.4).

Grammar kept here (RFC 5321 4.1.2):

    Reverse-path   = Path / "<>"
    Forward-path   = Path
    Path           = "<" [ A-d-l ":" ] Mailbox ">"
    A-d-l          = At-domain *( "," At-domain )      ; source route: parsed, then ignored
    At-domain      = "@" Domain
    Mailbox        = Local-part "@" ( Domain / address-literal )
    Local-part     = Dot-string / Quoted-string
    Dot-string     = Atom *("."  Atom)
    Quoted-string  = DQUOTE *QcontentSMTP DQUOTE
    QcontentSMTP   = qtextSMTP / quoted-pairSMTP
    quoted-pairSMTP = %d92 %d32-126
    qtextSMTP      = %d32-33 / %d35-91 / %d93-126
    Mail-parameters = esmtp-param *(SP esmtp-param)
    esmtp-param    = esmtp-keyword ["=" esmtp-value]
    esmtp-keyword  = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
    esmtp-value    = 1*(%d33-60 / %d62-126)

Leniency, as Postfix has it: a path without angle brackets, spaces after the colon of
"MAIL FROM:", a mailbox without a domain ("<postmaster>", RFC 5321 4.1.1.3), and atoms with
empty parts ("a..b"): the local part is then rendered quoted. UTF-8 outside ASCII is taken in
atoms, quoted strings and domains as RFC 6531 does; whether a session may use it (MAIL's
SMTPUTF8 parameter) is the server core's decision.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = [
    "Address",
    "AddressError",
    "ParamError",
    "Path",
    "parse_address",
    "parse_params",
    "parse_path",
    "render_address",
    "split_path_argument",
]

# Each class below is written as the ASCII characters it excludes: "[^...]" takes every
# non-ASCII character, as RFC 6531 wants, and compiles in a tenth of a millisecond, where the
# same class spelled with a \u0080-\U0010ffff range took 3 to 7 ms each at import
# (tests/proto/smtp/test_smtp_address.py checks them against the classes spelled out).
# RFC 5322 3.2.3 atext, plus UTF-8 (RFC 6531 3.3 extends atext with UTF8-non-ascii): every
# character but controls, space and the specials ()<>[]:;@\,." .
ATEXT = r"""[^\x00-\x20"(),.:;<>@\[\\\]\x7f]"""
ATEXT_OR_DOT = r"""[^\x00-\x20"(),:;<>@\[\\\]\x7f]"""
QTEXT_OR_SP = r"""[^\x00-\x1f"\\\x7f]"""  # RFC 5321 4.1.2 qtextSMTP, space, UTF-8
LET_DIG = r"[^\x00-/:-@\[-`{-\x7f]"  # RFC 5321 4.1.2 Let-dig, or UTF-8 (U-labels)
LDH = r"[^\x00-,./:-@\[-`{-\x7f]"  # Let-dig or "-"
_DOT_STRING = re.compile(rf"{ATEXT}+(?:\.{ATEXT}+)*")
_LENIENT_DOTS = re.compile(rf"{ATEXT_OR_DOT}+")
_QTEXT_OR_SP = re.compile(QTEXT_OR_SP)
# sub-domain = Let-dig [Ldh-str]; U-labels allowed (RFC 6531).
_SUB_DOMAIN = re.compile(rf"{LET_DIG}(?:{LDH}*{LET_DIG})?")
_GENERAL_LITERAL = re.compile(r"([A-Za-z0-9-]*[A-Za-z0-9]):([\x21-\x5a\x5e-\x7e]+)")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e]+")

# RFC 5321 4.5.3.1.2: "The maximum total length of a domain name or number is 255 octets."
MAX_DOMAIN_LENGTH = 255

# The path nearly every MAIL and RCPT carries, <ascii-dot-string@ascii.host.name>, or a bare
# local name (<postmaster>, RFC 5321 4.1.1.3; what smtp-source and many LMTP set-ups send), in
# one step: what `parse_path` makes of it by the general way, a subset of each class there
# (~2.6 -> ~1 us, ~3.7 -> ~1 us bare, per recipient of an LMTP transaction; tests/proto/smtp
# hold it to the general way).
_SIMPLE_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_SIMPLE_PATH = re.compile(
    rf"<([A-Za-z0-9!#$%&'*+/=?^_`{{|}}~.-]+)(?:@((?:{_SIMPLE_LABEL}\.)*{_SIMPLE_LABEL}))?>")


class AddressError(ValueError):
    """The text is not an envelope address; the message says what is wrong."""


class ParamError(ValueError):
    """ESMTP parameters are malformed (RFC 5321 4.1.2 Mail-parameters)."""


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: `local_part` unquoted, `domain` None for a bare local name like postmaster."""

    local_part: str
    domain: str | None = None

    def __str__(self) -> str:
        local = self.local_part
        if not _DOT_STRING.fullmatch(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return local if self.domain is None else f"{local}@{self.domain}"


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed reverse- or forward-path; `address` is None for the null path <>."""

    address: Address | None
    route: tuple[str, ...] = ()


def _check_domain(domain: str) -> str:
    if not domain:
        raise AddressError("empty domain")
    if len(domain.encode("utf-8")) > MAX_DOMAIN_LENGTH:
        raise AddressError("domain is longer than 255 octets")
    if domain.startswith("["):
        if not domain.endswith("]"):
            raise AddressError(f"unterminated address literal {domain!r}")
        inner = domain[1:-1]
        if inner[:5].lower() == "ipv6:":
            try:
                ipaddress.IPv6Address(inner[5:])
            except ValueError:
                raise AddressError(f"bad IPv6 address literal {domain!r}") from None
        elif ":" in inner:
            if not _GENERAL_LITERAL.fullmatch(inner):
                raise AddressError(f"bad address literal {domain!r}")
        else:
            try:
                ipaddress.IPv4Address(inner)
            except ValueError:
                raise AddressError(f"bad IPv4 address literal {domain!r}") from None
        return domain
    for label in domain.split("."):
        if not _SUB_DOMAIN.fullmatch(label):
            raise AddressError(f"bad domain {domain!r}")
    return domain


def _parse_local_part(text: str) -> tuple[str, int]:
    """Parse a local part at the start of `text`; return it unquoted and the index after it."""
    if text.startswith('"'):
        out: list[str] = []
        i = 1
        while i < len(text):
            ch = text[i]
            if ch == '"':
                return "".join(out), i + 1
            if ch == "\\":
                if i + 1 >= len(text) or not ("\x20" <= text[i + 1] <= "\x7e"):
                    raise AddressError("bad quoted pair in local part")
                out.append(text[i + 1])
                i += 2
                continue
            if not _QTEXT_OR_SP.fullmatch(ch):
                raise AddressError(f"character {ch!r} is not allowed in a quoted local part")
            out.append(ch)
            i += 1
        raise AddressError("unterminated quoted local part")
    match = _LENIENT_DOTS.match(text)
    if not match:
        raise AddressError("empty or malformed local part")
    return match.group(), match.end()


def _parse_mailbox(text: str) -> Address:
    local, end = _parse_local_part(text)
    rest = text[end:]
    if not rest:
        if not local:
            raise AddressError("empty local part")
        return Address(local, None)
    if not rest.startswith("@"):
        raise AddressError(f"unexpected {rest[:1]!r} after the local part")
    return Address(local, _check_domain(rest[1:]))


def parse_address(text: str) -> Address:
    """Parse a mailbox, with or without angle brackets and source route. `<>` is rejected."""
    path = parse_path(text)
    if path.address is None:
        raise AddressError("the null path <> is not a mailbox")
    return path.address


def parse_path(text: str) -> Path:
    """Parse a Reverse-path or Forward-path (angle brackets optional, leniently)."""
    simple = _SIMPLE_PATH.fullmatch(text)
    if simple is not None:
        local, domain = simple.groups()
        if domain is None or len(domain) <= MAX_DOMAIN_LENGTH:
            return Path(Address(local, domain))
    inner = text
    if text.startswith("<"):
        if not text.endswith(">") or len(text) < 2:
            raise AddressError("missing closing '>'")
        inner = text[1:-1]
        if inner == "":
            return Path(None)
    elif text.endswith(">"):
        raise AddressError("missing opening '<'")
    if not inner:
        raise AddressError("empty address")
    route: tuple[str, ...] = ()
    if inner.startswith("@"):
        # RFC 5321 4.1.1.3: "Servers MUST be prepared to encounter a list of source routes in
        # the forward-path, but they SHOULD ignore the routes".
        colon = inner.find(":")
        if colon < 0:
            raise AddressError("source route without ':'")
        hops = inner[:colon].split(",")
        for hop in hops:
            if not hop.startswith("@"):
                raise AddressError(f"bad source route hop {hop!r}")
            _check_domain(hop[1:])
        route = tuple(hop[1:] for hop in hops)
        inner = inner[colon + 1 :]
    return Path(_parse_mailbox(inner), route)


def split_path_argument(text: str) -> tuple[str, str]:
    """Split "<path> params" (or "path params") into the path and the parameter text.

    Quoted strings may hold spaces and '>' (RFC 5321 4.1.2 QcontentSMTP), so the scan knows them.
    Without a quote the first '>' (or space) ends the path: one find, not a loop per character
    (every RCPT of a 50-recipient LMTP transaction comes here, on the event loop).
    """
    bracketed = text.startswith("<")
    if '"' not in text:
        end = text.find(">" if bracketed else " ")
        if end < 0:
            return text, ""
        if bracketed:
            end += 1
        return text[:end], text[end:].lstrip(" ")
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif bracketed and ch == ">":
            return text[: i + 1], text[i + 1 :].lstrip(" ")
        elif not bracketed and ch == " ":
            return text[:i], text[i:].lstrip(" ")
        i += 1
    return text, ""


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ESMTP parameters; keywords are upper-cased, a repeated keyword is an error."""
    params: dict[str, str | None] = {}
    for word in text.split(" "):
        if not word:
            continue
        key, eq, value = word.partition("=")
        if not _KEYWORD.fullmatch(key):
            raise ParamError(f"bad parameter keyword {key!r}")
        if eq and not _VALUE.fullmatch(value):
            raise ParamError(f"bad value for parameter {key.upper()}")
        name = key.upper()
        if name in params:
            raise ParamError(f"parameter {name} given twice")
        params[name] = value if eq else None
    return params


def render_address(local_part: str, domain: str | None = None) -> str:
    """`local@domain` for an envelope path, quoting the local part when RFC 5321 4.1.2 needs it
    (anything but a Dot-string)."""
    local = local_part
    if not _DOT_STRING.fullmatch(local):
        local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return local if not domain else f"{local}@{domain}"


def encode_xtext(value: str) -> str:
    """RFC 3461 4 xtext, as MAIL's AUTH= parameter carries an identity (RFC 4954 5)."""
    out = []
    for byte in value.encode("utf-8"):
        if 0x21 <= byte <= 0x7E and byte not in (0x2B, 0x3D):  # "+" and "=" are encoded
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def decode_xtext(value: str) -> str:
    """Inverse of encode_xtext; malformed escapes are AddressError."""
    raw = bytearray()
    i = 0
    while i < len(value):
        char = value[i]
        if char == "+":
            pair = value[i + 1 : i + 3]
            if len(pair) != 2 or any(c not in "0123456789ABCDEFabcdef" for c in pair):
                raise AddressError(f"bad xtext escape in {value!r}")
            raw.append(int(pair, 16))
            i += 3
        else:
            raw += char.encode("utf-8")
            i += 1
    return raw.decode("utf-8", "replace")
