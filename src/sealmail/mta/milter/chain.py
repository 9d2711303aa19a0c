"""Several milters in order, for one SMTP session (or one locally posted message).

Each event goes to every milter in the order main.cf lists them; the first that refuses
decides (later ones do not see the event), as Postfix does. At the end of the message each milter
in turn is shown the message as the milters before it left it, and its edits are applied before
the next one sees it.

A milter that fails (see sealmail.mta.milter.client) is dropped for the rest of the session and
milter_default_action decides, with Postfix's replies: tempfail "451 4.7.1 Service unavailable -
try again later", reject "550 5.5.0 Service unavailable", shutdown "421 4.7.1 ...", accept
(carry on without it), quarantine (carry on, the message goes to the hold queue). The default
action's reply then answers every later event of the session, as Postfix's does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sealmail.mta.milter.client import MilterClient, MilterFailure
from sealmail.mta.milter.message import MilterMessage
from sealmail.mta.milter.settings import MilterSettings
from sealmail.proto.milter import (
    Body,
    Connect,
    Data,
    EndOfHeaders,
    EndOfMessage,
    Header,
    Helo,
    Mail,
    Outcome,
    ProtocolFlag,
    Rcpt,
    Stage,
    Verdict,
)

log = logging.getLogger("sealmail.mta.milter")

CONTINUE = Verdict(Outcome.CONTINUE)
_DEFAULT_REPLIES = {
    "tempfail": Verdict(Outcome.REJECT, "451 4.7.1 Service unavailable - try again later"),
    "reject": Verdict(Outcome.REJECT, "550 5.5.0 Service unavailable"),
    "shutdown": Verdict(Outcome.SHUTDOWN, "421 4.7.1 Service unavailable - try again later"),
}
Macros = Callable[[str], "str | None"]  # a macro's value now, None when it has none


@dataclass
class MessageOutcome:
    verdict: Verdict
    message: MilterMessage
    hold: str | None = None  # the quarantine reason: the message goes to the hold queue


class _Member:
    """One milter of the chain and what became of it."""

    def __init__(self, client: MilterClient) -> None:
        self.client = client
        self.failed: Verdict | None = None  # the default action's verdict, once it failed
        self.hold = False  # failed with default action quarantine


class MilterChain:
    def __init__(self, settings: MilterSettings, macros: Macros) -> None:
        self.settings = settings
        self.macros = macros
        self.members = [_Member(MilterClient(e, settings)) for e in settings.endpoints]

    async def open(self) -> None:
        for member in self.members:
            try:
                await member.client.open()
            except MilterFailure as exc:
                self._failed(member, exc)

    async def close(self) -> None:
        for member in self.members:
            await member.client.close()

    def _failed(self, member: _Member, exc: MilterFailure) -> None:
        log.warning("%s", exc)
        member.client.hang_up()
        action = self.settings.default_action
        if action == "quarantine":
            member.hold = True
            member.failed = CONTINUE
        else:
            member.failed = _DEFAULT_REPLIES.get(action, CONTINUE)

    def _macros(self, names: tuple[str, ...]) -> tuple[tuple[bytes, bytes], ...]:
        """The values of the named macros that have one (or a milter_macro_defaults value)."""
        pairs = []
        for name in names:
            value = self.macros(name.strip("{}"))
            if value is None:
                value = self.settings.macro_defaults.get(name)
            if value is not None:
                pairs.append((name.encode(), value.encode("utf-8", "surrogateescape")))
        return tuple(pairs)

    async def _event(self, member: _Member, stage: Stage, packet: object,
                     timeout: float) -> Verdict:
        if member.failed is not None:
            return member.failed
        client = member.client
        # A milter may name its own macro lists in the negotiation; else main.cf's.
        names = client.session.macro_lists.get(stage, self.settings.macros.get(stage, ()))
        try:
            verdict = await client.event(stage, packet, self._macros(names), timeout)
        except MilterFailure as exc:
            self._failed(member, exc)
            return member.failed or CONTINUE
        return CONTINUE if verdict is None else verdict

    async def _all(self, stage: Stage, packet: object) -> Verdict:
        """One event to every milter in order; the first verdict that is not CONTINUE or
        ACCEPT decides."""
        for member in self.members:
            session = member.client.session
            if member.failed is None and not session.active:
                if session.sticky.outcome is not Outcome.CONTINUE:
                    return session.sticky
                continue
            verdict = await self._event(member, stage, packet, self.settings.command_timeout)
            if verdict.outcome not in (Outcome.CONTINUE, Outcome.ACCEPT):
                return verdict
        return CONTINUE

    # -- the SMTP stages ----------------------------------------------------------------------

    async def connect(self, hostname: str, address: str, port: int) -> Verdict:
        if not address:
            packet = Connect(hostname.encode(), b"L", 0, b"")
        else:
            family = b"6" if ":" in address else b"4"
            shown = hostname if hostname != "unknown" else f"[{address}]"
            packet = Connect(shown.encode(), family, port, address.encode())
        return await self._all(Stage.CONNECT, packet)

    async def helo(self, name: str) -> Verdict:
        return await self._all(Stage.HELO, Helo(name.encode("utf-8", "surrogateescape")))

    async def mail(self, args: tuple[str, ...]) -> Verdict:
        return await self._all(Stage.MAIL, Mail(_encoded(args)))

    async def rcpt(self, args: tuple[str, ...]) -> Verdict:
        return await self._all(Stage.RCPT, Rcpt(_encoded(args)))

    async def data(self) -> Verdict:
        return await self._all(Stage.DATA, Data())

    def abort(self) -> None:
        for member in self.members:
            if member.failed is None:
                member.client.abort()

    async def message(self, message: MilterMessage) -> MessageOutcome:
        """Headers, body and end of message to each milter in turn, its edits applied."""
        outcome = MessageOutcome(CONTINUE, message)
        timeout = self.settings.content_timeout
        for member in self.members:
            if member.failed is None and not member.client.session.active:
                continue  # it accepted the message (or the connection) already
            verdict = await self._message_to(member, message, timeout)
            session = member.client.session
            if member.hold:
                outcome.hold = outcome.hold or "milter triggers HOLD action"
            elif session.quarantine is not None and member.failed is None:
                outcome.hold = session.quarantine or "milter triggers HOLD action"
            if verdict.outcome not in (Outcome.CONTINUE, Outcome.ACCEPT):
                outcome.verdict = verdict
                break
            if member.failed is None:
                leading = bool(session.protocol & ProtocolFlag.HDR_LEADSPC)
                message.apply(session.edits, leading)
        for member in self.members:
            member.client.session.message_done()  # the milter starts afresh after EOM
        return outcome

    async def _message_to(self, member: _Member, message: MilterMessage,
                          timeout: float) -> Verdict:
        if member.failed is not None:
            return member.failed
        session = member.client.session
        leading = bool(session.protocol & ProtocolFlag.HDR_LEADSPC)
        for name, value in message.header_pairs(leading):
            verdict = await self._event(member, Stage.HEADER, Header(name, value), timeout)
            if verdict.outcome is not Outcome.CONTINUE:
                return verdict
        steps: list[tuple[Stage, object]] = [(Stage.EOH, EndOfHeaders())]
        steps += [(Stage.BODY, Body(chunk)) for chunk in message.body_chunks()]
        steps.append((Stage.EOM, EndOfMessage()))
        for stage, packet in steps:
            verdict = await self._event(member, stage, packet, timeout)
            if verdict.outcome is not Outcome.CONTINUE or stage is Stage.EOM:
                return verdict
        return CONTINUE


def _encoded(args: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(a.encode("utf-8", "surrogateescape") for a in args)
