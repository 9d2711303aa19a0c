"""Sans-I/O SMTP/LMTP server core (RFC 5321, RFC 2033, RFC 3030, RFC 4954, RFC 3207).

API changes and decisions relative to the brief (read first if you code against this):

- ADDED, not changed: `UsageError` (raised when the host misuses the core: `next_event()` while
  an event waits for its answer, `answer()` with nothing pending, a 3xx answer, more LMTP answers
  than recipients, `auth_challenge()` outside AUTH, `tls_started()` without an accepted
  STARTTLS). `conn.replies_owed` (LMTP replies still due for the pending MessageData),
  `conn.recipients`, `conn.capabilities`, `conn.state`, `conn.tls_active`, `conn.hello_name`,
  `conn.bad_commands`; `tls_started(auth_mechanisms=None)` may replace the offered mechanisms.
- Events carry extra trailing fields: `Hello(command, hostname)`, `MailFrom(..., address)`,
  `RcptTo(..., address)` (the parsed `Address`), `MessageData(..., reverse_path, mail_params)`,
  `ProtocolError(reply, line)`.
- AUTH cancel ("*"): the core emits `AuthResponse(None)` and the HOST answers it, normally
  `Reply(501, "5.0.0", "AUTH aborted")`. A base64 error ends the exchange with 501 5.5.2 from the
  core (a `ProtocolError` event): the host drops its mechanism state on the next AuthStart.
  Answer AuthStart/AuthResponse with `auth_challenge`, `auth_succeeded`, or a 4xx/5xx `answer`.
- MAIL needs LHLO/EHLO/HELO first in both modes (503 5.5.1).
- NOOP, VRFY, HELP produce no event (answered by the core).
- Message too big: a `ProtocolError(552 ...)` event is emitted after the core sent the 552s.
- STARTTLS: after the host answers 2xx the core drops buffered and further received bytes until
  `tls_started()`; the driver must wrap the socket after flushing `data_to_send()`.
- Malformed BDAT (no valid count) gets 501 5.5.4 and closes the session: its chunk cannot be
  skipped, and reading it as commands would be command injection.
- Data lines end at CRLF only: "<CRLF>.<CRLF>" ends DATA; a bare LF is content (SMTP smuggling).
- `BINARYMIME` is advertised too (BODY=BINARYMIME is accepted, with BDAT only).
- `smtputf8=True` advertises SMTPUTF8 and takes MAIL's SMTPUTF8 parameter (RFC 6531);
  `strict_smtputf8=True` refuses a non-ASCII address in a transaction that did not declare it
  (553 5.6.7). Off by default: UTF-8 addresses are then taken as they always were.
- `Limits.max_line_length` counts octets before the line end; AUTH response lines may be up to
  12288 octets (RFC 4954 4) whatever the limit.

Typical host loop::

    conn.receive_data(data)
    while (event := conn.next_event()) is not NEED_DATA:
        if isinstance(event, ConnectionClosed): ...close...
        elif isinstance(event, MessageData):
            for rcpt in event.recipients: conn.answer(deliver(rcpt, event.content))
        elif event.needs_reply: conn.answer(decide(event))
    writer.write(conn.data_to_send())
"""

from sealmail.proto.smtp.address import (
    Address,
    AddressError,
    ParamError,
    Path,
    decode_xtext,
    encode_xtext,
    parse_address,
    parse_params,
    parse_path,
)
from sealmail.proto.smtp.events import (
    NEED_DATA,
    AuthResponse,
    AuthStart,
    ConnectionClosed,
    DataCommand,
    Event,
    Hello,
    HelloCommand,
    MailFrom,
    MessageData,
    NeedData,
    NonSmtpCommand,
    ProtocolError,
    Quit,
    RcptTo,
    Reset,
    StartTLS,
)
from sealmail.proto.smtp.replies import Reply
from sealmail.proto.smtp.server import Limits, ServerConnection, UsageError
from sealmail.proto.smtp.state import Mode, SessionState

__all__ = [
    "NEED_DATA",
    "Address",
    "AddressError",
    "AuthResponse",
    "AuthStart",
    "ConnectionClosed",
    "DataCommand",
    "Event",
    "Hello",
    "HelloCommand",
    "Limits",
    "MailFrom",
    "MessageData",
    "Mode",
    "NeedData",
    "NonSmtpCommand",
    "ParamError",
    "Path",
    "ProtocolError",
    "Quit",
    "RcptTo",
    "Reply",
    "Reset",
    "ServerConnection",
    "SessionState",
    "StartTLS",
    "UsageError",
    "decode_xtext",
    "encode_xtext",
    "parse_address",
    "parse_params",
    "parse_path",
]
