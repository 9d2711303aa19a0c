"""What smtpd and pickup call at each stage: milter verdicts as SMTP replies and log lines.

Postfix's behaviour, kept here so that smtpd's own code only makes one call per stage:

- CONNECT: a 421 (or milter_default_action shutdown) ends the session at once with Postfix's
  `421 HOST Service unavailable - try again later`; a 5xx makes the greeting `554 HOST ESMTP not
  accepting connections` and the session goes on; any rejection at CONNECT or HELO but a 421 is
  remembered and answers MAIL FROM (Postfix answers HELO with 250 in that case, and so do we);
- MAIL, RCPT, DATA: the milter's reply replaces our 250 (a refused RCPT refuses only that
  recipient);
- end of message: the reply, or DISCARD (250, the message dropped: `milter-discard`), or
  QUARANTINE (the message goes to the hold queue: `milter-hold`), or the edits.

Log lines are Postfix's: `NOQUEUE: milter-reject: RCPT from unknown[192.0.2.1]: 550 5.7.1
Command rejected; from=<a@example.org> to=<b@example.com> proto=ESMTP helo=<client>`, and at the
end of the message cleanup's `QUEUEID: milter-reject: END-OF-MESSAGE from ...: 5.7.1 ...`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sealmail.mta.milter.chain import MilterChain
from sealmail.mta.milter.message import MilterMessage
from sealmail.mta.milter.settings import MilterSettings
from sealmail.mta.queue import Envelope, MessageWriter, QueueName, RecipientRecord
from sealmail.proto.milter import Outcome, Verdict
from sealmail.proto.smtp import Reply

log = logging.getLogger("sealmail.mta.milter")


def smtp_reply(text: str) -> Reply:
    """A milter's reply text ("550 5.7.1 words", maybe multi-line) as an SMTP Reply."""
    lines = text.split("\r\n")
    code = int(lines[0][:3])
    enhanced = None
    bodies = []
    for line in lines:
        rest = line[4:]
        first, _, after = rest.partition(" ")
        parts = first.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            enhanced = enhanced or first
            rest = after
        bodies.append(rest)
    return Reply(code, enhanced, tuple(bodies) if len(bodies) > 1 else bodies[0])


@dataclass
class MessageVerdict:
    """The end of the message: refuse with `reply`, or queue `message` (unless discarded)."""

    reply: Reply | None
    message: MilterMessage
    discard: bool = False
    hold: str | None = None


class SmtpdMilters:
    """The milters of one SMTP session (smtpd_milters), with the session's macro values."""

    def __init__(self, settings: MilterSettings, *, client: str, client_address: str,
                 client_port: int, hostname: str, server_address: str = "") -> None:
        self.client = client  # "unknown[192.0.2.1]", as log lines name it
        self.client_address = client_address
        self.client_port = client_port
        self.values: dict[str, str] = {
            "j": hostname, "daemon_name": settings.daemon_name or hostname, "v": settings.v,
            "_": f"unknown [{client_address}]" if client_address else "localhost",
            "client_addr": client_address or "127.0.0.1", "client_name": "unknown",
            "client_port": str(client_port), "client_ptr": "unknown",
        }
        if server_address:
            self.values["daemon_addr"] = server_address
        self.chain = MilterChain(settings, self.values.get)
        self.sticky: Reply | None = None  # a rejection at CONNECT or HELO answers MAIL FROM

    @classmethod
    def for_session(cls, settings: MilterSettings, writer: asyncio.StreamWriter, client: str,
                    client_address: str, hostname: str) -> SmtpdMilters:
        peer = writer.get_extra_info("peername")
        server = writer.get_extra_info("sockname")
        return cls(settings, client=client, client_address=client_address,
                   client_port=peer[1] if isinstance(peer, tuple) else 0, hostname=hostname,
                   server_address=server[0] if isinstance(server, tuple) else "")

    def set_macros(self, **values: str) -> None:
        """Macro values learnt on the way: tls_version, cipher, auth_type, auth_authen, ..."""
        self.values.update(values)

    def _refusal(self, verdict: Verdict, where: str, whatsup: str) -> Reply | None:
        if verdict.outcome in (Outcome.CONTINUE, Outcome.ACCEPT, Outcome.DISCARD):
            return None
        reply = smtp_reply(verdict.reply)
        log.info("NOQUEUE: milter-reject: %s from %s: %s;%s", where, self.client,
                 verdict.reply.replace("\r\n", " "), whatsup)
        return reply

    async def connect(self, whatsup: str) -> Reply | None:
        """Open the milters and report the client: their refusal, for smtpd's greeting (421
        ends the session, 5xx makes it 554); but for a 421 it is kept for MAIL FROM."""
        await self.chain.open()
        verdict = await self.chain.connect("unknown", self.client_address, self.client_port)
        reply = self._refusal(verdict, "CONNECT", whatsup)
        if reply is None or reply.code != 421:
            self.sticky = reply
        return reply

    async def helo(self, name: str, whatsup: str) -> None:
        verdict = await self.chain.helo(name)
        reply = self._refusal(verdict, "HELO", whatsup)
        self.sticky = self.sticky or reply

    async def mail(self, sender: str, params: dict[str, str | None], whatsup: str
                   ) -> Reply | None:
        if self.sticky is not None:
            return self.sticky
        local, _, domain = sender.rpartition("@")
        self.values.update({"mail_addr": sender, "mail_host": domain if local else ""})
        self.values.pop("rcpt_addr", None)
        reply = self._refusal(await self.chain.mail((f"<{sender}>", *_esmtp(params))), "MAIL",
                              whatsup)
        if reply is not None:
            self.chain.abort()
        return reply

    async def rcpt(self, recipient: str, params: dict[str, str | None], whatsup: str
                   ) -> Reply | None:
        self.values.update({"rcpt_addr": recipient, "rcpt_host": recipient.rpartition("@")[2]})
        verdict = await self.chain.rcpt((f"<{recipient}>", *_esmtp(params)))
        return self._refusal(verdict, "RCPT", whatsup)

    def abort(self) -> None:
        """The transaction ends without a message (RSET, a refusal of ours)."""
        self.chain.abort()

    async def message(self, queue_id: str, content: bytes, sender: str,
                      recipients: Sequence[RecipientRecord], whatsup: str) -> MessageVerdict:
        """DATA, then the message: what to do with it."""
        self.values["i"] = queue_id
        message = MilterMessage.parse(content, sender, list(recipients))
        verdict = await self.chain.data()
        refusal = self._refusal(verdict, "DATA", whatsup)
        if refusal is not None:
            self.chain.abort()
            return MessageVerdict(refusal, message)
        outcome = await self.chain.message(message)
        return end_of_message(outcome.verdict, message, outcome.hold, queue_id, self.client,
                              whatsup)

    async def end_of_data(self, writer: MessageWriter, envelope: Envelope, content: bytes,
                          whatsup: str) -> tuple[Reply | None, Envelope, QueueName]:
        """The message cleanup made, through the milters, before it is committed: a Reply
        (the writer aborted: a refusal, or 250 for a discarded message), or the envelope to
        commit (the writer holding the edited content) and the queue to commit it to."""
        try:
            verdict = await self.message(writer.queue_id, content, envelope.sender,
                                         envelope.recipients, whatsup)
        except BaseException:
            writer.abort()
            raise
        if verdict.reply is not None or verdict.discard:
            writer.abort()
            reply = verdict.reply or Reply(250, "2.0.0", f"Ok: queued as {writer.queue_id}")
            return reply, envelope, QueueName.INCOMING
        target = QueueName.HOLD if verdict.hold is not None else QueueName.INCOMING
        return None, restage(writer, envelope, verdict.message), target

    async def close(self) -> None:
        await self.chain.close()


def end_of_message(verdict: Verdict, message: MilterMessage, hold: str | None, queue_id: str,
                   client: str, whatsup: str) -> MessageVerdict:
    """The verdict at the end of a message, logged as Postfix's cleanup logs it."""
    where = f"END-OF-MESSAGE from {client}"
    if verdict.outcome in (Outcome.REJECT, Outcome.SHUTDOWN):
        text = verdict.reply.replace("\r\n", " ")
        log.info("%s: milter-reject: %s: %s;%s", queue_id, where, text[4:], whatsup)
        return MessageVerdict(smtp_reply(verdict.reply), message)
    if verdict.outcome is Outcome.DISCARD or not message.recipients:
        log.info("%s: milter-discard: %s: milter triggers DISCARD action;%s", queue_id, where,
                 whatsup)
        return MessageVerdict(None, message, discard=True)
    if hold is not None:
        log.info("%s: milter-hold: %s: %s;%s", queue_id, where, hold, whatsup)
    return MessageVerdict(None, message, hold=hold)


def restage(writer: MessageWriter, envelope: Envelope, message: MilterMessage) -> Envelope:
    """The edited message in place of what cleanup wrote (nothing is durable yet: the
    caller commits the writer, and only then answers 250)."""
    if not message.changed:
        return envelope
    content = message.render()
    writer.replace_content(content)
    return dataclasses.replace(envelope, sender=message.sender,
                               recipients=tuple(message.recipients), size=len(content))


def _going(verdict: Verdict) -> bool:
    return verdict.outcome in (Outcome.CONTINUE, Outcome.ACCEPT)


def _esmtp(params: dict[str, str | None]) -> tuple[str, ...]:
    return tuple(k if v is None else f"{k}={v}" for k, v in params.items())


async def filter_local_message(settings: MilterSettings, *, queue_id: str, content: bytes,
                               sender: str, recipients: Sequence[RecipientRecord],
                               hostname: str, uid: int) -> MessageVerdict:
    """non_smtpd_milters for one locally posted message, the client pretended to be
    localhost[127.0.0.1] as Postfix's cleanup does (CONNECT, EHLO localhost, MAIL, RCPT...)."""
    values = {"j": hostname, "daemon_name": settings.daemon_name or hostname, "v": settings.v,
              "_": "localhost [127.0.0.1]", "client_addr": "127.0.0.1",
              "client_name": "localhost", "i": queue_id, "mail_addr": sender}
    chain = MilterChain(settings, values.get)
    message = MilterMessage.parse(content, sender, list(recipients))
    whatsup = f" from=<{sender}>"
    try:
        await chain.open()
        verdict = await chain.connect("localhost", "127.0.0.1", 0)
        if _going(verdict):
            verdict = await chain.helo("localhost")
        if _going(verdict):
            verdict = await chain.mail((f"<{sender}>",))
        for recipient in recipients:
            if _going(verdict):
                verdict = await chain.rcpt((f"<{recipient.address}>",))
        if _going(verdict):
            verdict = await chain.data()
        hold = None
        if _going(verdict):
            outcome = await chain.message(message)
            verdict, hold = outcome.verdict, outcome.hold
        return end_of_message(verdict, message, hold, queue_id, f"localhost[127.0.0.1] uid={uid}",
                              whatsup)
    finally:
        await chain.close()


def filter_local_message_blocking(settings: MilterSettings, **message: Any) -> MessageVerdict:
    """filter_local_message from a thread with no event loop (pickup's)."""
    return asyncio.run(filter_local_message(settings, **message))
