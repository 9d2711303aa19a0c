"""Sans-I/O POP3 server core: RFC 1939 with CAPA (RFC 2449), STLS (RFC 2595), AUTH (RFC 5034).

The host (sealmail.server.pop3d) feeds bytes and answers events; see `ServerConnection` for the
theory of operation and `_state` for the session's states. SASL failures become POP3 replies only
through `sasl_failure`; store errors through sealmail.pop3.errors (this core knows no store).

Typical host loop::

    conn.receive_data(data)
    while (event := conn.next_event()) is not NEED_DATA:
        if isinstance(event, ConnectionClosed): ...close...
        elif isinstance(event, Login): conn.open_maildrop(user, lock_and_list()) / conn.refuse(...)
        elif isinstance(event, MessageRequest): conn.send_message(read(event.uid))
        elif isinstance(event, Update): expunge(event.deleted); conn.update_done()
    writer.write(conn.data_to_send())
"""

from __future__ import annotations

from sealmail.proto.pop3._connection import (
    AUTH_LINE_LENGTH,
    Limits,
    Maildrop,
    MaildropMessage,
    ServerConnection,
    UsageError,
    top_of,
)
from sealmail.proto.pop3._events import (
    NEED_DATA,
    AuthAborted,
    AuthResponse,
    AuthStart,
    ConnectionClosed,
    Event,
    Login,
    MessageRequest,
    NeedData,
    ProtocolError,
    Quit,
    StartTLS,
    Update,
)
from sealmail.proto.pop3._replies import Reply, ResponseCode, sasl_failure
from sealmail.proto.pop3._state import LEGAL, Command, SessionState

__all__ = [
    "AUTH_LINE_LENGTH",
    "LEGAL",
    "NEED_DATA",
    "AuthAborted",
    "AuthResponse",
    "AuthStart",
    "Command",
    "ConnectionClosed",
    "Event",
    "Limits",
    "Login",
    "Maildrop",
    "MaildropMessage",
    "MessageRequest",
    "NeedData",
    "ProtocolError",
    "Quit",
    "Reply",
    "ResponseCode",
    "ServerConnection",
    "SessionState",
    "StartTLS",
    "Update",
    "UsageError",
    "sasl_failure",
    "top_of",
]
