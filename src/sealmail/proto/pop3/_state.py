"""The POP3 server session as data: states, commands, and where each command is legal.

Story of a session (RFC 1939 3, RFC 2449, RFC 2595 4, RFC 5034 4):

    AUTHORIZATION --USER+PASS / AUTH ok, maildrop locked--> TRANSACTION --QUIT--> UPDATE --> CLOSED
       |  \\--AUTH--> AUTH (SASL "+ " exchange) --maildrop locked--> TRANSACTION
       |   \\         \\--failure, "*" cancel-----------------------> AUTHORIZATION
       |    \\--STLS +OK--> TLS_WAIT --tls_started()--> AUTHORIZATION
       \\--QUIT, end of stream---------------------------------------> CLOSED

In TRANSACTION the maildrop is a fixed list taken at login: numbers, sizes and deletion marks
belong to the session, and DELE only marks. The marked messages are removed in UPDATE, which
only QUIT enters: RFC 1939 6, "If a session terminates for some reason other than a
client-issued QUIT command, the POP3 session does not enter the UPDATE state and MUST not
remove any messages from the maildrop."

`LEGAL` says, for each command, the states where it may run; the engine checks it once before
a command's own code runs, and `order_error` gives the reply otherwise (the session goes on).
"""

from __future__ import annotations

import enum

from sealmail.proto.pop3._replies import ERR, Reply

__all__ = ["LEGAL", "Command", "SessionState", "order_error"]


class SessionState(enum.Enum):
    AUTHORIZATION = enum.auto()  # greeting sent, not logged in
    AUTH = enum.auto()  # a SASL exchange is running: lines are base64 answers
    TLS_WAIT = enum.auto()  # +OK sent to STLS; the driver is doing the handshake
    TRANSACTION = enum.auto()  # logged in, maildrop locked
    UPDATE = enum.auto()  # QUIT given: the host is removing the deleted messages
    CLOSED = enum.auto()


class Command(enum.Enum):
    USER = "USER"
    PASS = "PASS"
    APOP = "APOP"
    AUTH = "AUTH"
    STLS = "STLS"
    CAPA = "CAPA"
    QUIT = "QUIT"
    STAT = "STAT"
    LIST = "LIST"
    RETR = "RETR"
    DELE = "DELE"
    NOOP = "NOOP"
    RSET = "RSET"
    TOP = "TOP"
    UIDL = "UIDL"


_S = SessionState
_LOGIN = frozenset({_S.AUTHORIZATION})
_MAILDROP = frozenset({_S.TRANSACTION})

LEGAL: dict[Command, frozenset[SessionState]] = {
    Command.USER: _LOGIN,
    Command.PASS: _LOGIN,
    Command.APOP: _LOGIN,
    Command.AUTH: _LOGIN,
    # RFC 2595 4: "STLS ... Restrictions: Only permitted in AUTHORIZATION state."
    Command.STLS: _LOGIN,
    # RFC 2449 5: CAPA is valid in the AUTHORIZATION and TRANSACTION states.
    Command.CAPA: _LOGIN | _MAILDROP,
    Command.QUIT: _LOGIN | _MAILDROP,
    Command.STAT: _MAILDROP,
    Command.LIST: _MAILDROP,
    Command.RETR: _MAILDROP,
    Command.DELE: _MAILDROP,
    Command.NOOP: _MAILDROP,
    Command.RSET: _MAILDROP,
    Command.TOP: _MAILDROP,
    Command.UIDL: _MAILDROP,
}


def order_error(command: Command, state: SessionState) -> Reply:
    """The reply to `command` in `state`, where LEGAL says it may not run."""
    if state is _S.TRANSACTION:
        return ERR(f"{command.value} is not valid after login")
    return ERR(f"{command.value} is valid only after login")
