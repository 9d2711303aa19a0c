"""IMAP responses as data, and their wire form (RFC 9051 7; response grammar in 9).

Three kinds of response: `StatusResponse` (tagged or untagged OK / NO / BAD, untagged BYE and
PREAUTH, with an optional `ResponseCode`), `DataResponse` (untagged data: EXISTS, FETCH, LIST,
...), and `ContinuationRequest` ("+ ..."). Their contents are `Value` trees:

    None            -> NIL
    int             -> number
    str / bytes     -> string: quoted when it can be, else a literal (RFC 9051 4.3); str is
                       encoded as UTF-8 (surrogateescape keeps raw header octets)
    Atom(...)       -> sent as is (keywords, flags, "BODY[1]<0>", sequence sets)
    AString(...)    -> an atom when every octet allows it, else a string (mailbox names)
    Literal(...)    -> always a literal; `binary=True` gives RFC 3516's literal8 ~{n}
    list / tuple    -> a parenthesized list

`render(response, utf8=...)` chooses the forms; `utf8=True` (after ENABLE UTF8=ACCEPT or
IMAP4rev2) lets 8-bit text go in quoted strings. ENVELOPE and BODYSTRUCTURE values come from the
`mime` data model via `envelope_value` and `body_structure_value`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

from sealmail.proto.imap.mime import Address, BodyStructure, Envelope
from sealmail.proto.imap.sequence import SequenceSet
from sealmail.proto.imap.syntax import render_astring, render_string

__all__ = [
    "AString",
    "Adjacent",
    "Atom",
    "ContinuationRequest",
    "DataResponse",
    "Literal",
    "RenderedResponses",
    "Response",
    "ResponseCode",
    "StatusResponse",
    "ThreadNode",
    "Value",
    "acl",
    "body_structure_value",
    "capability",
    "enabled",
    "envelope_value",
    "esearch",
    "exists",
    "expunge",
    "fetch",
    "flags",
    "id_response",
    "list_response",
    "listrights",
    "myrights",
    "namespace",
    "quota",
    "quotaroot",
    "recent",
    "render",
    "render_envelope",
    "render_value",
    "search",
    "sort",
    "status",
    "thread",
    "vanished",
]


@dataclass(frozen=True, slots=True)
class Atom:
    """Sent exactly as given: the caller vouches that it is a valid atom-like token."""

    value: str


@dataclass(frozen=True, slots=True)
class AString:
    value: str | bytes


@dataclass(frozen=True, slots=True)
class Literal:
    value: bytes
    binary: bool = False


@dataclass(frozen=True, slots=True)
class Adjacent:
    """Values written one after the other with no space: `1*address` and `1*body` in RFC 9051 9
    ("((NIL NIL "a" "b")(NIL NIL "c" "d"))"), which a space-separated list would break."""

    items: tuple[Value, ...]


# An Envelope renders as ENVELOPE (`render_envelope`): FETCH ENVELOPE of a whole folder would
# otherwise build and walk a tree of some forty values per message.
Value = Union[  # noqa: UP007
    None, int, str, bytes, Atom, AString, Literal, Adjacent, Envelope, Sequence["Value"]
]


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """A response code (RFC 9051 7.1): `[name args...]`, e.g. ResponseCode("UIDNEXT", (4392,))."""

    name: str
    args: tuple[Value, ...] = ()


@dataclass(frozen=True, slots=True)
class StatusResponse:
    """OK / NO / BAD (tagged when `tag` is set), BYE or PREAUTH (always untagged)."""

    status: str
    text: str
    tag: str | None = None
    code: ResponseCode | None = None

    def __post_init__(self) -> None:
        if self.status not in ("OK", "NO", "BAD", "BYE", "PREAUTH"):
            raise ValueError(f"unknown status {self.status!r}")
        if self.tag is not None and self.status in ("BYE", "PREAUTH"):
            raise ValueError(f"{self.status} is always untagged")


@dataclass(frozen=True, slots=True)
class DataResponse:
    """Untagged data: `* ` followed by the values separated by spaces."""

    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class ContinuationRequest:
    """`+ text`, or `+ base64` when `challenge` is set (AUTHENTICATE, RFC 9051 6.2.2)."""

    text: str = ""
    challenge: bytes | None = None


@dataclass(frozen=True, slots=True)
class RenderedResponses:
    """Untagged responses already in wire form, each ending in CRLF: bulk output (FETCH of
    thousands of messages or of whole bodies) that a fast path built directly as octets
    instead of as one `DataResponse` tree per message. The producer vouches for the syntax;
    `render` passes the octets through unchanged."""

    data: bytes

    def __post_init__(self) -> None:
        if self.data and not self.data.endswith(b"\r\n"):
            raise ValueError("rendered responses end with CRLF")


Response = StatusResponse | DataResponse | ContinuationRequest | RenderedResponses


# -- rendering ------------------------------------------------------------------------------------


def render_value(value: Value, utf8: bool = False) -> bytes:
    if value is None:
        return b"NIL"
    if isinstance(value, bool):
        raise TypeError("booleans have no IMAP form")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("IMAP numbers are unsigned")
        return str(value).encode()
    if isinstance(value, str | bytes):
        return render_string(value, utf8)
    if isinstance(value, Atom):
        return value.value.encode("utf-8")
    if isinstance(value, AString):
        return render_astring(value.value, utf8)
    if isinstance(value, Literal):
        prefix = b"~{" if value.binary else b"{"
        return prefix + str(len(value.value)).encode() + b"}\r\n" + value.value
    if isinstance(value, Adjacent):
        return b"".join(render_value(item, utf8) for item in value.items)
    if isinstance(value, Envelope):
        return render_envelope(value, utf8)
    return b"(" + b" ".join(render_value(item, utf8) for item in value) + b")"


def _text(text: str, utf8: bool) -> bytes:
    """resp-text: no CR or LF may slip into a status line. TEXT-CHAR is 7-bit (RFC 3501 9);
    only once IMAP4rev2 or UTF8=ACCEPT is enabled may it carry UTF-8 (RFC 9051 Appendix E
    item 24), so before that anything else becomes "?"."""
    text = text.replace("\r", " ").replace("\n", " ")
    if utf8:
        return text.encode("utf-8", "replace")
    return text.encode("ascii", "replace")


def render(response: Response, utf8: bool = False) -> bytes:
    """The wire form of one response, CRLF included."""
    if isinstance(response, ContinuationRequest):
        if response.challenge is not None:
            return b"+ " + base64.b64encode(response.challenge) + b"\r\n"
        return b"+ " + _text(response.text or "Ready", utf8) + b"\r\n"
    if isinstance(response, RenderedResponses):
        return response.data
    if isinstance(response, DataResponse):
        return b"* " + b" ".join(render_value(v, utf8) for v in response.values) + b"\r\n"
    head = (response.tag or "*").encode("ascii") + b" " + response.status.encode()
    if response.code is not None:
        code = response.code.name.encode("ascii")
        if response.code.args:
            code += b" " + b" ".join(render_value(a, utf8) for a in response.code.args)
        head += b" [" + code + b"]"
    text = response.text or response.status.capitalize()
    return head + b" " + _text(text, utf8) + b"\r\n"


# -- untagged data (RFC 9051 7.2-7.5 and the extensions) ------------------------------------------


def _atoms(values: Iterable[str]) -> list[Value]:
    return [Atom(v) for v in values]


def capability(capabilities: Iterable[str]) -> DataResponse:
    return DataResponse((Atom("CAPABILITY"), *_atoms(capabilities)))


def enabled(capabilities: Iterable[str]) -> DataResponse:
    """RFC 5161 3.2."""
    return DataResponse((Atom("ENABLED"), *_atoms(capabilities)))


def exists(count: int) -> DataResponse:
    return DataResponse((count, Atom("EXISTS")))


def recent(count: int) -> DataResponse:
    return DataResponse((count, Atom("RECENT")))


def expunge(number: int) -> DataResponse:
    return DataResponse((number, Atom("EXPUNGE")))


def vanished(uids: SequenceSet, earlier: bool = False) -> DataResponse:
    """RFC 7162 3.2.10: `* VANISHED [(EARLIER)] uid-set`."""
    head: list[Value] = [Atom("VANISHED")]
    if earlier:
        head.append([Atom("EARLIER")])
    return DataResponse((*head, Atom(str(uids))))


def flags(values: Iterable[str]) -> DataResponse:
    return DataResponse((Atom("FLAGS"), _atoms(values)))


def list_response(
    attributes: Iterable[str],
    delimiter: str | None,
    mailbox: str,
    extended: Sequence[tuple[str, Value]] = (),
    command: str = "LIST",
) -> DataResponse:
    """`* LIST (attributes) "delim" name [(tag value ...)]` (RFC 9051 7.3.1, RFC 5258 CHILDINFO,
    OLDNAME); `command="LSUB"` for LSUB."""
    values: list[Value] = [Atom(command), _atoms(attributes), delimiter, AString(mailbox)]
    if extended:
        items: list[Value] = []
        for name, value in extended:
            items.extend((AString(name), value))
        values.append(items)
    return DataResponse(tuple(values))


def status(mailbox: str, items: Mapping[str, int]) -> DataResponse:
    pairs: list[Value] = []
    for name, number in items.items():
        pairs.extend((Atom(name), number))
    return DataResponse((Atom("STATUS"), AString(mailbox), pairs))


def search(numbers: Iterable[int], modseq: int | None = None) -> RenderedResponses:
    """`* SEARCH n...` with RFC 7162's `(MODSEQ n)` when the search used MODSEQ."""
    return _numbers(b"SEARCH", numbers, b"" if modseq is None else b" (MODSEQ %d)" % modseq)


def sort(numbers: Iterable[int]) -> RenderedResponses:
    """RFC 5256 4: `* SORT n...`."""
    return _numbers(b"SORT", numbers)


def _numbers(name: bytes, numbers: Iterable[int], tail: bytes = b"") -> RenderedResponses:
    """`* NAME n n n...`: a whole mailbox's numbers written at once, not as values one by one."""
    listed = b" ".join(map(b"%d".__mod__, numbers))
    return RenderedResponses(b"* " + name + (b" " + listed if listed else b"") + tail + b"\r\n")


def esearch(
    tag: str | None,
    uid: bool,
    minimum: int | None = None,
    maximum: int | None = None,
    all_numbers: SequenceSet | None = None,
    count: int | None = None,
    modseq: int | None = None,
) -> DataResponse:
    """RFC 4731 3.1: `* ESEARCH (TAG "a") [UID] [MIN n] [MAX n] [ALL set] [COUNT n]`."""
    values: list[Value] = [Atom("ESEARCH")]
    if tag is not None:
        values.append([Atom("TAG"), tag])
    if uid:
        values.append(Atom("UID"))
    for name, number in (("MIN", minimum), ("MAX", maximum)):
        if number is not None:
            values.extend((Atom(name), number))
    if all_numbers is not None:
        values.extend((Atom("ALL"), Atom(str(all_numbers))))
    if count is not None:
        values.extend((Atom("COUNT"), count))
    if modseq is not None:
        values.extend((Atom("MODSEQ"), modseq))
    return DataResponse(tuple(values))


def fetch(number: int, items: Sequence[tuple[str, Value]]) -> DataResponse:
    """`* n FETCH (name value ...)`; names as `FetchAttribute.response_name()` gives them."""
    pairs: list[Value] = []
    for name, value in items:
        pairs.extend((Atom(name), value))
    return DataResponse((number, Atom("FETCH"), pairs))


def namespace(
    personal: Sequence[tuple[str, str | None]],
    other_users: Sequence[tuple[str, str | None]],
    shared: Sequence[tuple[str, str | None]],
) -> DataResponse:
    """RFC 2342 / RFC 9051 7.3.3: each namespace is a list of (prefix, delimiter) or NIL."""

    def group(entries: Sequence[tuple[str, str | None]]) -> Value:
        if not entries:
            return None
        return [[prefix, delimiter] for prefix, delimiter in entries]

    return DataResponse((Atom("NAMESPACE"), group(personal), group(other_users), group(shared)))


def id_response(parameters: Sequence[tuple[str, str | None]] | None) -> DataResponse:
    """RFC 2971 3.2."""
    if parameters is None:
        return DataResponse((Atom("ID"), None))
    values: list[Value] = []
    for key, value in parameters:
        values.extend((key, value))
    return DataResponse((Atom("ID"), values))


def acl(mailbox: str, entries: Sequence[tuple[str, str]]) -> DataResponse:
    """RFC 4314 3.6: `* ACL mailbox identifier rights ...`."""
    values: list[Value] = [Atom("ACL"), AString(mailbox)]
    for identifier, rights in entries:
        values.extend((AString(identifier), AString(rights)))
    return DataResponse(tuple(values))


def listrights(mailbox: str, identifier: str, required: str, optional: Sequence[str]
               ) -> DataResponse:
    """RFC 4314 3.7."""
    values: list[Value] = [Atom("LISTRIGHTS"), AString(mailbox), AString(identifier),
                           AString(required)]
    values.extend(AString(group) for group in optional)
    return DataResponse(tuple(values))


def myrights(mailbox: str, rights: str) -> DataResponse:
    """RFC 4314 3.8."""
    return DataResponse((Atom("MYRIGHTS"), AString(mailbox), AString(rights)))


def quota(root: str, resources: Sequence[tuple[str, int, int]]) -> DataResponse:
    """RFC 9208 5.1: `* QUOTA root (NAME usage limit ...)`."""
    values: list[Value] = []
    for name, usage, limit in resources:
        values.extend((Atom(name), usage, limit))
    return DataResponse((Atom("QUOTA"), AString(root), values))


def quotaroot(mailbox: str, roots: Sequence[str]) -> DataResponse:
    """RFC 9208 5.2."""
    return DataResponse((Atom("QUOTAROOT"), AString(mailbox), *(AString(r) for r in roots)))


@dataclass(frozen=True, slots=True)
class ThreadNode:
    """One message of a thread (RFC 5256 4); `number` None is a placeholder for a missing parent."""

    number: int | None
    children: tuple[ThreadNode, ...] = field(default_factory=tuple)


def _thread_members(node: ThreadNode) -> bytes:
    parts: list[bytes] = []
    while True:
        if node.number is not None:
            parts.append(str(node.number).encode())
        if len(node.children) == 1 and node.number is not None:
            node = node.children[0]
            continue
        if node.children:
            parts.append(b"".join(b"(" + _thread_members(c) + b")" for c in node.children))
        return b" ".join(parts)


def thread(roots: Sequence[ThreadNode]) -> DataResponse:
    """`* THREAD (2)(3 6 (4 23)(44 7 96))` (RFC 5256 4)."""
    body = "".join("(" + _thread_members(root).decode() + ")" for root in roots)
    return DataResponse((Atom("THREAD"),) + ((Atom(body),) if body else ()))


# -- ENVELOPE and BODYSTRUCTURE (RFC 9051 7.5.2) -------------------------------------------------


def _addresses(addresses: tuple[Address, ...]) -> Value:
    if not addresses:
        return None
    return [Adjacent(tuple([a.name, a.adl, a.mailbox, a.host] for a in addresses))]


def envelope_value(envelope: Envelope) -> Value:
    """env-date env-subject env-from env-sender env-reply-to env-to env-cc env-bcc
    env-in-reply-to env-message-id; sender and reply-to default to from (RFC 9051 7.5.2)."""
    sender = envelope.sender or envelope.from_
    reply_to = envelope.reply_to or envelope.from_
    return [
        envelope.date,
        envelope.subject,
        _addresses(envelope.from_),
        _addresses(sender),
        _addresses(reply_to),
        _addresses(envelope.to),
        _addresses(envelope.cc),
        _addresses(envelope.bcc),
        envelope.in_reply_to,
        envelope.message_id,
    ]


def render_envelope(envelope: Envelope, utf8: bool = False) -> bytes:
    """`render_value(envelope_value(envelope), utf8)`, written directly."""

    def nstring(value: str | None) -> bytes:
        return b"NIL" if value is None else render_string(value, utf8)

    def addresses(items: tuple[Address, ...]) -> bytes:
        if not items:
            return b"NIL"
        return b"(" + b"".join(
            b"(" + b" ".join((nstring(a.name), nstring(a.adl), nstring(a.mailbox),
                              nstring(a.host))) + b")"
            for a in items) + b")"

    return b"(" + b" ".join((
        nstring(envelope.date),
        nstring(envelope.subject),
        addresses(envelope.from_),
        addresses(envelope.sender or envelope.from_),
        addresses(envelope.reply_to or envelope.from_),
        addresses(envelope.to),
        addresses(envelope.cc),
        addresses(envelope.bcc),
        nstring(envelope.in_reply_to),
        nstring(envelope.message_id),
    )) + b")"


def _params(params: tuple[tuple[str, str], ...]) -> Value:
    if not params:
        return None
    values: list[Value] = []
    for name, value in params:
        values.extend((name, value))
    return values


def body_structure_value(body: BodyStructure, extensible: bool = True) -> Value:
    """BODYSTRUCTURE (`extensible`) or BODY (without extension data) of a part tree."""
    if body.children:
        # body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]: no space between bodies
        values: list[Value] = [
            Adjacent(tuple(body_structure_value(c, extensible) for c in body.children)),
            body.subtype,
        ]
        if extensible:
            values.extend((_params(body.params), _disposition(body), _language(body),
                           body.location))
        return values
    fields: list[Value] = [
        body.type,
        body.subtype,
        _params(body.params),
        body.content_id,
        body.description,
        body.encoding,
        body.size,
    ]
    if body.message is not None:
        fields.extend((
            envelope_value(body.message.envelope),
            body_structure_value(body.message.body, extensible),
            body.lines,
        ))
    elif body.type == "TEXT":
        fields.append(body.lines)
    if extensible:
        fields.extend((body.md5, _disposition(body), _language(body), body.location))
    return fields


def _disposition(body: BodyStructure) -> Value:
    if body.disposition is None:
        return None
    return [body.disposition, _params(body.disposition_params)]


def _language(body: BodyStructure) -> Value:
    if not body.language:
        return None
    if len(body.language) == 1:
        return body.language[0]
    return list(body.language)
