"""One milter conversation from the MTA's side, without I/O: negotiation, which events to send,
which replies to wait for, and what the replies mean (Postfix's milter8.c is the model).

Theory of operation: `MilterSession.start()` gives the OPTNEG packet; `negotiate(reply)` checks
the milter's answer (its version no higher, its actions a subset of ours) and keeps the events it
does not want (SMFIP_NO*), the replies it will not send (SMFIP_NR_*) and any macro lists it
asked for. Then, per event, `event(stage, packet, macros)` gives the octets to send (the MACRO
packet first, even for an event the milter does not want, as Postfix does) and whether a reply is
owed; `receive(reply)` takes each reply in turn and returns a `Verdict` when the event's answer
is complete, None while more is coming (PROGRESS, QUARANTINE, and at end of message the
modification requests, which are collected in `edits`).

ACCEPT and DISCARD end the milter's part in the message; any verdict but CONTINUE at CONNECT or
HELO, and SHUTDOWN anywhere, ends its part in the connection (a rejection then sticks: `sticky`).
Afterwards the session sends no more events for that scope (`active` says whether one may be
sent). A rejection of a command ends nothing by itself: the MTA aborts a refused message.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sealmail.proto.milter.codec import (
    Abort,
    Accept,
    Action,
    AddHeader,
    AddRecipient,
    ChangeFrom,
    ChangeHeader,
    Continue,
    DeleteRecipient,
    Discard,
    InsertHeader,
    Macro,
    MacroStage,
    MilterProtocolError,
    OptNeg,
    Progress,
    ProtocolFlag,
    Quarantine,
    Quit,
    Reject,
    ReplaceBody,
    Reply,
    ReplyCode,
    Shutdown,
    Skip,
    Tempfail,
    encode_command,
)

VERSION = 6
# Everything Postfix lets a milter do.
ACTIONS = (Action.ADDHDRS | Action.ADDRCPT | Action.DELRCPT | Action.CHGHDRS | Action.CHGBODY
           | Action.QUARANTINE | Action.CHGFROM | Action.ADDRCPT_PAR | Action.SETSYMLIST)
_NOSEND = (ProtocolFlag.NOCONNECT | ProtocolFlag.NOHELO | ProtocolFlag.NOMAIL
           | ProtocolFlag.NORCPT | ProtocolFlag.NOBODY | ProtocolFlag.NOHDRS | ProtocolFlag.NOEOH
           | ProtocolFlag.NOUNKNOWN | ProtocolFlag.NODATA)
_NOREPLY = (ProtocolFlag.NR_CONN | ProtocolFlag.NR_HELO | ProtocolFlag.NR_MAIL
            | ProtocolFlag.NR_RCPT | ProtocolFlag.NR_DATA | ProtocolFlag.NR_UNKN
            | ProtocolFlag.NR_HDR | ProtocolFlag.NR_EOH | ProtocolFlag.NR_BODY)
# The events each protocol version defines (milter8.c's MILTER8_V*_PROTO_MASK).
_V2 = (ProtocolFlag.NOCONNECT | ProtocolFlag.NOHELO | ProtocolFlag.NOMAIL | ProtocolFlag.NORCPT
       | ProtocolFlag.NOBODY | ProtocolFlag.NOHDRS | ProtocolFlag.NOEOH)
_V3 = _V2 | ProtocolFlag.NOUNKNOWN
_V4 = _V3 | ProtocolFlag.NODATA
_V6 = _V4 | ProtocolFlag.SKIP | ProtocolFlag.RCPT_REJ | _NOREPLY | ProtocolFlag.HDR_LEADSPC
PROTOCOL_MASKS = {2: _V2, 3: _V3, 4: _V4, 6: _V6}


class Stage(enum.Enum):
    """An event, with the flag that says the milter does not want it, the flag that says it
    sends no reply, and its command octet (MACRO packets name it)."""

    CONNECT = (ProtocolFlag.NOCONNECT, ProtocolFlag.NR_CONN, b"C")
    HELO = (ProtocolFlag.NOHELO, ProtocolFlag.NR_HELO, b"H")
    MAIL = (ProtocolFlag.NOMAIL, ProtocolFlag.NR_MAIL, b"M")
    RCPT = (ProtocolFlag.NORCPT, ProtocolFlag.NR_RCPT, b"R")
    DATA = (ProtocolFlag.NODATA, ProtocolFlag.NR_DATA, b"T")
    HEADER = (ProtocolFlag.NOHDRS, ProtocolFlag.NR_HDR, b"L")
    EOH = (ProtocolFlag.NOEOH, ProtocolFlag.NR_EOH, b"N")
    BODY = (ProtocolFlag.NOBODY, ProtocolFlag.NR_BODY, b"B")
    EOM = (ProtocolFlag(0), ProtocolFlag(0), b"E")
    UNKNOWN = (ProtocolFlag.NOUNKNOWN, ProtocolFlag.NR_UNKN, b"U")

    @property
    def not_wanted(self) -> ProtocolFlag:
        return self.value[0]

    @property
    def no_reply(self) -> ProtocolFlag:
        return self.value[1]

    @property
    def code(self) -> bytes:
        return self.value[2]


MACRO_STAGES = {MacroStage.CONNECT: Stage.CONNECT, MacroStage.HELO: Stage.HELO,
                MacroStage.ENVFROM: Stage.MAIL, MacroStage.ENVRCPT: Stage.RCPT,
                MacroStage.DATA: Stage.DATA, MacroStage.EOM: Stage.EOM,
                MacroStage.EOH: Stage.EOH}


class Outcome(enum.Enum):
    CONTINUE = "continue"
    ACCEPT = "accept"  # no more events for this message (or connection, at CONNECT/HELO)
    DISCARD = "discard"
    REJECT = "reject"  # `reply` holds the SMTP reply (4xx or 5xx)
    SHUTDOWN = "shutdown"  # 421, and the connection ends


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reply: str = ""  # for REJECT: "550 5.7.1 Command rejected", or the milter's own


CONTINUE = Verdict(Outcome.CONTINUE)
REJECTED = "550 5.7.1 Command rejected"
TEMPFAILED = "451 4.7.1 Service unavailable - try again later"

Edit = (AddHeader | InsertHeader | ChangeHeader | AddRecipient | DeleteRecipient | ChangeFrom
        | ReplaceBody)
_EDIT_ACTIONS: dict[type, Action] = {
    AddHeader: Action.ADDHDRS, InsertHeader: Action.ADDHDRS, ChangeHeader: Action.CHGHDRS,
    DeleteRecipient: Action.DELRCPT, ChangeFrom: Action.CHGFROM, ReplaceBody: Action.CHGBODY,
}


class Scope(enum.Enum):
    READY = "ready"  # negotiated, between messages
    MESSAGE = "message"  # MAIL sent, the message's events under way
    ACCEPT_MESSAGE = "accept message"  # the milter is done with this message
    ACCEPT_CONNECTION = "accept connection"  # ... with this connection
    REJECT_CONNECTION = "reject connection"  # every later event gets `sticky`


def valid_reply_text(text: str) -> bool:
    """A milter's SMTP reply: each line `ddd-...` / final `ddd ...`, 4xx or 5xx, the enhanced
    code's class matching (Postfix's milter8_valid_smtp_reply)."""
    lines = text.split("\r\n")
    for number, line in enumerate(lines):
        final = number == len(lines) - 1
        if (len(line) < 4 or line[0] not in "45" or not line[1:3].isdigit()
                or line[3] != (" " if final else "-")):
            return False
        if len(line) > 4 and line[4].isdigit() and line[4] != line[0]:
            return False
    return True


@dataclass
class MilterSession:
    """The MTA's side of one milter connection (see the module text)."""

    protocol_version: int = VERSION
    my_events: int = _V6
    version: int = 0
    actions: int = 0
    protocol: int = 0
    macro_lists: dict[Stage, tuple[str, ...]] = field(default_factory=dict)
    scope: Scope = Scope.READY
    sticky: Verdict = CONTINUE  # the verdict that ended the connection's scope
    edits: list[Edit] = field(default_factory=list)
    quarantine: str | None = None
    # Edits of one message may not add up to more octets than this (a milter could otherwise
    # grow a message without end, a REPLBODY chunk at a time); past it, a protocol error.
    max_edit_octets: int = 64 * 1024 * 1024
    _edit_octets: int = 0
    _stage: Stage | None = None
    _skip: Stage | None = None

    def start(self) -> bytes:
        return encode_command(OptNeg(self.protocol_version, int(ACTIONS), self.my_events))

    def negotiate(self, reply: Reply) -> None:
        """The milter's OPTNEG answer; MilterProtocolError when we cannot talk to it."""
        if not isinstance(reply, OptNeg):
            raise MilterProtocolError(f"unexpected reply {type(reply).__name__} in handshake")
        if reply.version > self.protocol_version:
            raise MilterProtocolError(f"protocol version {reply.version} conflict with MTA "
                                      f"protocol version {self.protocol_version}")
        if reply.actions & ~int(ACTIONS):
            raise MilterProtocolError(f"request mask {reply.actions:#x} conflict with MTA "
                                      f"request mask {int(ACTIONS):#x}")
        self.version, self.actions, self.protocol = reply.version, reply.actions, reply.protocol
        # Events that the milter's version does not define are not sent.
        known = max((m for v, m in PROTOCOL_MASKS.items() if v <= reply.version), default=_V2)
        self.my_events &= known
        for stage_number, names in reply.macros:
            try:
                stage = MACRO_STAGES[MacroStage(stage_number)]
            except ValueError:
                continue  # Postfix ignores an unknown macro type too
            self.macro_lists[stage] = tuple(names.decode("utf-8", "replace").split())

    @property
    def active(self) -> bool:
        """Whether events are sent now (a milter that accepted or rejected is left alone)."""
        return self.scope in (Scope.READY, Scope.MESSAGE)

    def _sends(self, stage: Stage) -> bool:
        flag = stage.not_wanted
        return not (flag and (flag & ~self.my_events or flag & self.protocol))

    def event(self, stage: Stage, packet: object,
              macros: tuple[tuple[bytes, bytes], ...] = ()) -> tuple[bytes, bool]:
        """The octets for one event (empty when nothing is sent) and whether a reply is owed."""
        if not self.active:
            return b"", False
        if stage is Stage.MAIL:
            self.scope = Scope.MESSAGE
            self.edits, self.quarantine, self._edit_octets = [], None, 0
        if self._skip is not None and stage is not self._skip:
            self._skip = None
        if stage is self._skip:
            return b"", False
        out = b""
        if macros and stage is not Stage.HEADER:
            out += encode_command(Macro(stage.code, macros))
        if not self._sends(stage):
            return out, False
        out += encode_command(packet)  # type: ignore[arg-type]
        self._stage = stage
        owed = stage is Stage.EOM or not (stage.no_reply & self.protocol)
        return out, owed

    def abort(self) -> bytes:
        """The message is abandoned (RSET, a rejection elsewhere): SMFIC_ABORT, if one is due."""
        if self.scope is Scope.MESSAGE or self.scope is Scope.ACCEPT_MESSAGE:
            self.scope = Scope.READY
            return encode_command(Abort())
        return b""

    def message_done(self) -> None:
        """The end-of-message answer is in: the next MAIL starts afresh."""
        if self.scope in (Scope.MESSAGE, Scope.ACCEPT_MESSAGE):
            self.scope = Scope.READY

    def quit(self) -> bytes:
        return encode_command(Quit())

    def receive(self, reply: Reply) -> Verdict | None:
        """One reply to the current event: a Verdict when the answer is complete."""
        stage = self._stage
        if stage is None:
            raise MilterProtocolError(f"reply {type(reply).__name__} with no event pending")
        connection = stage in (Stage.CONNECT, Stage.HELO)
        if isinstance(reply, Progress):
            return None
        if isinstance(reply, Quarantine):
            self._allowed(reply, Action.QUARANTINE)
            self.quarantine = reply.reason.decode("utf-8", "replace")[:100]
            return None
        if isinstance(reply, (AddHeader, InsertHeader, ChangeHeader, AddRecipient,
                              DeleteRecipient, ChangeFrom, ReplaceBody)):
            if stage is not Stage.EOM:
                raise MilterProtocolError(f"{type(reply).__name__} before end of message")
            self._allowed(reply, self._action_of(reply))
            if isinstance(reply, ChangeHeader) and not reply.name:
                raise MilterProtocolError("null change header name")
            self._edit_octets += _edit_size(reply)
            if self._edit_octets > self.max_edit_octets:
                raise MilterProtocolError(f"edits of more than {self.max_edit_octets} octets")
            self.edits.append(reply)
            return None
        self._stage = None
        verdict = self._verdict(reply, stage, connection)
        if verdict.outcome is Outcome.CONTINUE:
            return verdict
        if connection or verdict.outcome is Outcome.SHUTDOWN:
            self.scope = (Scope.ACCEPT_CONNECTION if verdict.outcome is Outcome.ACCEPT
                          else Scope.REJECT_CONNECTION)
            if verdict.outcome is not Outcome.ACCEPT:
                self.sticky = verdict
        elif verdict.outcome in (Outcome.ACCEPT, Outcome.DISCARD):
            self.scope = Scope.ACCEPT_MESSAGE
        # A rejection ends no scope by itself: a refused RCPT leaves the message going, and the
        # MTA aborts a refused message (SMFIC_ABORT) as Postfix's smtpd does.
        return verdict

    def _verdict(self, reply: Reply, stage: Stage, connection: bool) -> Verdict:
        if isinstance(reply, Continue):
            return CONTINUE
        if isinstance(reply, Skip):
            self._skip = stage  # SMFIR_SKIP: no more events of this kind (body chunks)
            return CONTINUE
        if isinstance(reply, Accept):
            return Verdict(Outcome.ACCEPT)
        if isinstance(reply, Discard):
            if connection:  # "DISCARD action is not allowed for connect or helo"
                return CONTINUE
            return Verdict(Outcome.DISCARD)
        if isinstance(reply, Reject):
            return Verdict(Outcome.REJECT, REJECTED)
        if isinstance(reply, Tempfail):
            return Verdict(Outcome.REJECT, TEMPFAILED)
        if isinstance(reply, Shutdown):
            return Verdict(Outcome.SHUTDOWN, "421 4.7.0 Server closing connection")
        if isinstance(reply, ReplyCode):
            text = reply.text.decode("utf-8", "replace")
            if not valid_reply_text(text):
                raise MilterProtocolError(f"malformed reply: {text[:100]}")
            # Sendmail uses the text as a format: "%%" is "%", a lone "%" goes.
            text = text.replace("%%", "\0").replace("%", "").replace("\0", "%")
            return Verdict(Outcome.REJECT, text)
        raise MilterProtocolError(f"unexpected reply {type(reply).__name__}")

    def _allowed(self, reply: Reply, action: Action) -> None:
        if not self.actions & action:
            raise MilterProtocolError(f"{type(reply).__name__} not negotiated")

    @staticmethod
    def _action_of(reply: Reply) -> Action:
        if isinstance(reply, AddRecipient):
            return Action.ADDRCPT if reply.args is None else Action.ADDRCPT_PAR
        return _EDIT_ACTIONS[type(reply)]



def _edit_size(edit: Edit) -> int:
    if isinstance(edit, ReplaceBody):
        return len(edit.chunk)
    if isinstance(edit, (AddRecipient, DeleteRecipient, ChangeFrom)):
        return len(edit.address) + 2
    return len(edit.name) + len(edit.value) + 4
