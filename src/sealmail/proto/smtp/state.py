"""The SMTP/LMTP server session as data: states, commands, and where each command is legal.

Story of a session (RFC 5321 3, RFC 2033 4):

    GREETED --LHLO/EHLO/HELO--> READY --MAIL ok--> MAIL --RCPT ok--> RCPT --DATA--> DATA
       ^                          ^  \\--AUTH--> AUTH (334 exchange) --235/5xx--> READY
       |                          |   \\--STARTTLS 220--> TLS_WAIT --tls_started()--> GREETED
       |                          \\---- end of data, all replies given; RSET; LHLO again ------/
       \\--- (any state) QUIT, too many errors, EOF --> CLOSED

BDAT (RFC 3030) reads a counted chunk in state BDAT from MAIL or RCPT and goes back there; the
chunk is read even when the command is refused, so its octets are never taken as commands.

`LEGAL` says, for each command, the states where it may run; for any other state `ORDER_ERROR`
gives the reply (503 5.5.1 family). The engine in server.py checks this table once, before a
command's own code runs.
"""

from __future__ import annotations

import enum

from sealmail.proto.smtp.replies import Reply

__all__ = ["LEGAL", "ORDER_ERROR", "Command", "Mode", "SessionState", "order_error"]


class Mode(enum.Enum):
    """LMTP (RFC 2033) or SMTP (RFC 5321)."""

    LMTP = "LMTP"
    SMTP = "SMTP"


class SessionState(enum.Enum):
    GREETED = enum.auto()  # greeting sent, no LHLO/EHLO yet
    READY = enum.auto()  # no transaction
    MAIL = enum.auto()  # MAIL accepted, no recipient accepted yet
    RCPT = enum.auto()  # at least one recipient accepted
    DATA = enum.auto()  # reading dot-terminated data
    BDAT = enum.auto()  # reading a BDAT chunk
    AUTH = enum.auto()  # waiting for the client's answer to a 334 challenge
    TLS_WAIT = enum.auto()  # 220 sent to STARTTLS; waiting for the driver's handshake
    CLOSED = enum.auto()


class Command(enum.Enum):
    LHLO = "LHLO"
    EHLO = "EHLO"
    HELO = "HELO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    BDAT = "BDAT"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    VRFY = "VRFY"
    EXPN = "EXPN"
    HELP = "HELP"
    AUTH = "AUTH"
    STARTTLS = "STARTTLS"


_S = SessionState
_COMMAND_STATES = frozenset({_S.GREETED, _S.READY, _S.MAIL, _S.RCPT})
_TRANSACTION = frozenset({_S.MAIL, _S.RCPT})

LEGAL: dict[Command, frozenset[SessionState]] = {
    Command.LHLO: _COMMAND_STATES,
    Command.EHLO: _COMMAND_STATES,
    Command.HELO: _COMMAND_STATES,
    Command.MAIL: frozenset({_S.READY}),
    Command.RCPT: _TRANSACTION,
    # DATA/BDAT from MAIL (no recipient yet) get their own "no valid recipients" reply.
    Command.DATA: frozenset({_S.RCPT}),
    Command.BDAT: frozenset({_S.RCPT}),
    Command.RSET: _COMMAND_STATES,
    Command.NOOP: _COMMAND_STATES,
    Command.QUIT: _COMMAND_STATES,
    Command.VRFY: _COMMAND_STATES,
    Command.EXPN: _COMMAND_STATES,
    Command.HELP: _COMMAND_STATES,
    # RFC 4954 4: "The AUTH command is not permitted during a mail transaction."
    Command.AUTH: frozenset({_S.READY}),
    Command.STARTTLS: frozenset({_S.READY}),
}

_NEED_HELLO = "Error: send {hello} first"
_NO_RECIPIENTS_LMTP = Reply(503, "5.5.1", "No valid recipients")
_NO_RECIPIENTS_SMTP = Reply(554, "5.5.1", "Error: no valid recipients")
# A client that pipelines DATA after RCPTs that were all refused does what RFC 2920 3.1 asks: these
# replies are not counted as bad commands (Cyrus and Dovecot keep such a session too).
NO_RECIPIENTS_REPLIES = (_NO_RECIPIENTS_LMTP, _NO_RECIPIENTS_SMTP)

ORDER_ERROR: dict[tuple[Command, SessionState], Reply] = {
    (Command.MAIL, _S.MAIL): Reply(503, "5.5.1", "Error: nested MAIL command"),
    (Command.MAIL, _S.RCPT): Reply(503, "5.5.1", "Error: nested MAIL command"),
    (Command.RCPT, _S.READY): Reply(503, "5.5.1", "Error: need MAIL command"),
    (Command.DATA, _S.READY): Reply(503, "5.5.1", "Error: need RCPT command"),
    (Command.BDAT, _S.READY): Reply(503, "5.5.1", "Error: need RCPT command"),
    (Command.AUTH, _S.MAIL): Reply(503, "5.5.1", "Error: MAIL transaction in progress"),
    (Command.AUTH, _S.RCPT): Reply(503, "5.5.1", "Error: MAIL transaction in progress"),
    (Command.STARTTLS, _S.MAIL): Reply(503, "5.5.1", "Error: MAIL transaction in progress"),
    (Command.STARTTLS, _S.RCPT): Reply(503, "5.5.1", "Error: MAIL transaction in progress"),
}


def order_error(command: Command, state: SessionState, mode: Mode) -> Reply:
    """The reply to `command` given in `state`, where LEGAL says it may not run."""
    if command in (Command.DATA, Command.BDAT) and state is _S.MAIL:
        # RFC 2033 4.2: with no accepted recipient, LMTP refuses DATA with 503.
        return _NO_RECIPIENTS_LMTP if mode is Mode.LMTP else _NO_RECIPIENTS_SMTP
    known = ORDER_ERROR.get((command, state))
    if known is not None:
        return known
    hello = "LHLO" if mode is Mode.LMTP else "EHLO/HELO"
    return Reply(503, "5.5.1", _NEED_HELLO.format(hello=hello))
