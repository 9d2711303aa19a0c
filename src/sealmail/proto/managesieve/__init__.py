"""Sans-I/O ManageSieve server core (RFC 5804): scripts managed over a line protocol.

The host (sealmail.server.sieved) feeds bytes and answers events; see `ServerConnection` for the
theory of operation and `_state` for the session's states. SASL failures become responses only
through `sasl_failure`; script-store errors through sealmail.managesieve.errors (this core knows
no store).

Typical host loop::

    conn.receive_data(data)
    while (event := conn.next_event()) is not NEED_DATA:
        if isinstance(event, ConnectionClosed): ...close...
        elif isinstance(event, AuthStart): conn.auth_challenge(...) / conn.authenticated(user)
        elif isinstance(event, PutScript): validate, store; conn.answer(OK() or NO(...))
        elif isinstance(event, GetScript): conn.send_script(content)
    writer.write(conn.data_to_send())
"""

from __future__ import annotations

from sealmail.proto.managesieve._connection import (
    VERSION,
    Capabilities,
    Limits,
    ServerConnection,
    UsageError,
    check_script_name,
)
from sealmail.proto.managesieve._events import (
    NEED_DATA,
    AuthAborted,
    AuthResponse,
    AuthStart,
    CheckScript,
    ConnectionClosed,
    DeleteScript,
    Event,
    GetScript,
    HaveSpace,
    ListScripts,
    Logout,
    NeedData,
    ProtocolError,
    PutScript,
    RenameScript,
    SetActive,
    StartTLS,
    Unauthenticated,
)
from sealmail.proto.managesieve._responses import (
    BYE,
    NO,
    OK,
    Response,
    ResponseCode,
    Status,
    sasl_failure,
)
from sealmail.proto.managesieve._state import Command, SessionState
from sealmail.proto.managesieve._syntax import (
    Atom,
    LiteralStart,
    String,
    SyntaxProblem,
    render_string,
    tokenize,
)

__all__ = [
    "BYE",
    "NEED_DATA",
    "NO",
    "OK",
    "VERSION",
    "Atom",
    "AuthAborted",
    "AuthResponse",
    "AuthStart",
    "Capabilities",
    "CheckScript",
    "Command",
    "ConnectionClosed",
    "DeleteScript",
    "Event",
    "GetScript",
    "HaveSpace",
    "Limits",
    "ListScripts",
    "LiteralStart",
    "Logout",
    "NeedData",
    "ProtocolError",
    "PutScript",
    "RenameScript",
    "Response",
    "ResponseCode",
    "ServerConnection",
    "SessionState",
    "SetActive",
    "StartTLS",
    "Status",
    "String",
    "SyntaxProblem",
    "Unauthenticated",
    "UsageError",
    "check_script_name",
    "render_string",
    "sasl_failure",
    "tokenize",
]
