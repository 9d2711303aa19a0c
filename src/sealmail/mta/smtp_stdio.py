"""`sendmail -bs`: SMTP on standard input and output, as Postfix's sendmail runs smtpd stand-alone.

The SMTP core (sealmail.proto.smtp, SMTP mode) reads the commands; each message goes where
every other local submission goes: a maildrop file (sealmail.mta.pickup.post, fsync'd before
the 250), which pickup queues through cleanup, as for `sendmail` without -bs. So the same checks
apply (cleanup's header rules, virtual_alias_maps, hopcount_limit), no network is involved, and
the Received: header names the posting user. As Postfix's stand-alone mode, relay restrictions
do not apply (a local user can post to anyone with plain sendmail anyway); message_size_limit,
smtpd_recipient_limit and smtpd_hard_error_limit do. SMTPUTF8 is offered as by smtpd.

Blocking, one process per session: it reads whatever the client has sent (pipelining works),
answers, and ends at QUIT or end of input.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from sealmail.mta.config import MainConfig
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.pickup import MaildropError, post
from sealmail.mta.smtpd.settings import core_limits
from sealmail.proto.smtp import (
    NEED_DATA,
    ConnectionClosed,
    MailFrom,
    MessageData,
    Mode,
    RcptTo,
    Reply,
    ServerConnection,
)

__all__ = ["StdioSession"]


def _qualify(address: str, origin: str) -> str:
    return address if "@" in address or not address else f"{address}@{origin}"


@dataclass
class StdioSession:
    """One SMTP session over a pair of files; postings go to `maildrop`."""

    main: MainConfig
    maildrop: Path
    clock: Callable[[], float] = time.time
    posted: list[str] = field(default_factory=list)  # maildrop file names, for the caller
    _sender: str = ""
    _smtputf8: bool = False

    def connection(self) -> ServerConnection:
        main = self.main
        hostname = main.get(MAIN.myhostname)
        return ServerConnection(
            mode=Mode.SMTP,
            hostname=hostname,
            limits=core_limits(main),
            greeting_text=main.get(MAIN.smtpd_banner).removeprefix(hostname).strip(),
            smtputf8=main.get(MAIN.smtputf8_enable),
            strict_smtputf8=main.get(MAIN.smtputf8_enable),
        )

    def run(self, reader: BinaryIO, writer: BinaryIO) -> None:
        """Serve until QUIT, too many errors, or the end of `reader`."""
        conn = self.connection()
        self._write(writer, conn.data_to_send())
        fd = reader.fileno()
        while not conn.closed:
            data = os.read(fd, 65536)
            conn.receive_data(data)
            while not conn.closed:
                event = conn.next_event()
                if event is NEED_DATA or isinstance(event, ConnectionClosed):
                    break
                self._on_event(conn, event)
            self._write(writer, conn.data_to_send())
            if not data:
                break

    @staticmethod
    def _write(writer: BinaryIO, data: bytes) -> None:
        if data:
            writer.write(data)
            writer.flush()

    def _on_event(self, conn: ServerConnection, event: object) -> None:
        origin = self.main.get(MAIN.myorigin)
        if isinstance(event, MailFrom):
            self._sender = _qualify(event.reverse_path, origin)
            self._smtputf8 = "SMTPUTF8" in event.params
            conn.answer(Reply(250, "2.1.0", "Ok"))
        elif isinstance(event, RcptTo):
            conn.answer(Reply(250, "2.1.5", "Ok"))
        elif isinstance(event, MessageData):
            conn.answer(self._post(event, origin))

    def _post(self, event: MessageData, origin: str) -> Reply:
        recipients = [_qualify(r, origin) for r in event.recipients]
        try:
            path = post(self.maildrop, self._sender, recipients, event.content, self.clock(),
                        smtputf8=self._smtputf8)
        except MaildropError as exc:
            return Reply(451, "4.3.0", f"Error: queue file write error: {exc}")
        self.posted.append(path.name)
        return Reply(250, "2.0.0", f"Ok: queued as {path.name}")
