"""Sans-I/O IMAP core (RFC 3501, RFC 9051 and the extensions of issue 6).

What is here, bottom up:

- `syntax`: the lexical layer (atoms, quoted strings, literals, literal8, dates) and the string
  form choice for rendering (atom / quoted / literal).
- `sequence.SequenceSet`: "1:*", "$", UID ranges; merged-range membership and iteration.
- `search.SearchKey`: SEARCH key trees (AND / OR / NOT and every key of RFC 9051, WITHIN,
  MODSEQ); `fetch.FetchAttribute` / `fetch.Section`: FETCH items with BODY[section]<partial>,
  BINARY, BINARY.SIZE.
- `commands`: one frozen dataclass per command, each with its legal `states` and `render()`;
  `parser.parse_command(bytes) -> Command`, errors typed and carrying their tagged reply.
- `response`: responses as data and `render(response)`; helpers for every untagged reply of the
  supported extensions; ENVELOPE / BODYSTRUCTURE values from `mime`.
- `mime`: `parse_message(raw) -> ParsedMessage` (envelope, body structure, part offsets) with a
  compact serialized form, section extraction and BINARY decoding. Never raises.
- `state` / `connection.ServerConnection`: framing (lines, `{n}` with "+", `{n+}`, `~{n}`),
  state checks, IDLE / AUTHENTICATE continuation lines, STARTTLS and COMPRESS hand-over, the
  bad-command budget and limits.

Typical host loop::

    conn = ServerConnection(Limits(...))
    conn.send(StatusResponse("OK", "ready", code=ResponseCode("CAPABILITY", caps)))
    conn.receive_data(data)
    while (event := conn.next_event()) is not NEED_DATA:
        if isinstance(event, ConnectionClosed): ...close...
        elif isinstance(event, CommandReceived):
            for response in session.run(event.command): conn.send(response)  # tagged one last
        elif isinstance(event, IdleDone): conn.send(StatusResponse("OK", "IDLE terminated", tag))
    writer.write(conn.data_to_send())
"""

from sealmail.proto.imap.append import AppendMessage, CatenatePart
from sealmail.proto.imap.commands import (
    COMMANDS,
    Append,
    Authenticate,
    CancelUpdate,
    Capability,
    Check,
    Close,
    Command,
    Compress,
    Copy,
    Create,
    Delete,
    DeleteAcl,
    Enable,
    Examine,
    Expunge,
    Fetch,
    GetAcl,
    GetQuota,
    GetQuotaRoot,
    Id,
    Idle,
    List,
    ListRights,
    Login,
    Logout,
    Lsub,
    Move,
    MyRights,
    Namespace,
    Noop,
    QresyncParameters,
    Rename,
    Search,
    Select,
    SetAcl,
    SetQuota,
    Sort,
    SortCriterion,
    StartTLS,
    Status,
    Store,
    Subscribe,
    Thread,
    Unselect,
    Unsubscribe,
)
from sealmail.proto.imap.connection import Limits, ServerConnection
from sealmail.proto.imap.errors import (
    BadCommand,
    CommandNotAllowed,
    CommandRefused,
    ImapError,
    LiteralTooLarge,
    NestingTooDeep,
    TooManyItems,
    UnknownCommand,
    UsageError,
)
from sealmail.proto.imap.events import (
    NEED_DATA,
    AuthenticateAborted,
    AuthenticateData,
    CommandReceived,
    ConnectionClosed,
    Event,
    IdleDone,
    NeedData,
    ProtocolError,
)
from sealmail.proto.imap.fetch import MACROS, FetchAttribute, Section
from sealmail.proto.imap.mime import (
    Address,
    BodyStructure,
    EmbeddedMessage,
    Envelope,
    ParsedMessage,
    decode_part,
    find_part,
    parse_message,
    section_bytes,
)
from sealmail.proto.imap.notify import Notify, NotifyGroup
from sealmail.proto.imap.parser import ParserLimits, parse_command, peek_command
from sealmail.proto.imap.response import (
    Adjacent,
    AString,
    Atom,
    ContinuationRequest,
    DataResponse,
    Literal,
    RenderedResponses,
    Response,
    ResponseCode,
    StatusResponse,
    ThreadNode,
    Value,
    body_structure_value,
    envelope_value,
    render,
    render_envelope,
    render_value,
)
from sealmail.proto.imap.search import SUPPORTED_CHARSETS, SearchKey
from sealmail.proto.imap.sequence import STAR, SequenceSet
from sealmail.proto.imap.state import TRANSITIONS, ConnectionState, next_state
from sealmail.proto.imap.urlauth import GenUrlAuth, ResetKey, UrlFetch, UrlFetchItem
from sealmail.rfc5322 import header_fields, message_header

__all__ = [
    "COMMANDS",
    "MACROS",
    "NEED_DATA",
    "STAR",
    "SUPPORTED_CHARSETS",
    "TRANSITIONS",
    "AString",
    "Address",
    "Adjacent",
    "Append",
    "AppendMessage",
    "Atom",
    "Authenticate",
    "AuthenticateAborted",
    "AuthenticateData",
    "BadCommand",
    "BodyStructure",
    "CancelUpdate",
    "Capability",
    "CatenatePart",
    "Check",
    "Close",
    "Command",
    "CommandNotAllowed",
    "CommandReceived",
    "CommandRefused",
    "Compress",
    "ConnectionClosed",
    "ConnectionState",
    "ContinuationRequest",
    "Copy",
    "Create",
    "DataResponse",
    "Delete",
    "DeleteAcl",
    "EmbeddedMessage",
    "Enable",
    "Envelope",
    "Event",
    "Examine",
    "Expunge",
    "Fetch",
    "FetchAttribute",
    "GenUrlAuth",
    "GetAcl",
    "GetQuota",
    "GetQuotaRoot",
    "Id",
    "Idle",
    "IdleDone",
    "ImapError",
    "Limits",
    "List",
    "ListRights",
    "Literal",
    "LiteralTooLarge",
    "Login",
    "Logout",
    "Lsub",
    "Move",
    "MyRights",
    "Namespace",
    "NeedData",
    "NestingTooDeep",
    "Noop",
    "Notify",
    "NotifyGroup",
    "ParsedMessage",
    "ParserLimits",
    "ProtocolError",
    "QresyncParameters",
    "Rename",
    "RenderedResponses",
    "ResetKey",
    "Response",
    "ResponseCode",
    "Search",
    "SearchKey",
    "Section",
    "Select",
    "SequenceSet",
    "ServerConnection",
    "SetAcl",
    "SetQuota",
    "Sort",
    "SortCriterion",
    "StartTLS",
    "Status",
    "StatusResponse",
    "Store",
    "Subscribe",
    "Thread",
    "ThreadNode",
    "TooManyItems",
    "UnknownCommand",
    "Unselect",
    "Unsubscribe",
    "UrlFetch",
    "UrlFetchItem",
    "UsageError",
    "Value",
    "body_structure_value",
    "decode_part",
    "envelope_value",
    "find_part",
    "header_fields",
    "message_header",
    "next_state",
    "parse_command",
    "parse_message",
    "peek_command",
    "render",
    "render_envelope",
    "render_value",
    "section_bytes",
]
