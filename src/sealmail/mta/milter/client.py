"""One milter connection: the sans-I/O `MilterSession` driven over a socket with timeouts.

Every failure (cannot connect, a timeout, the milter hanging up, a protocol error) is a
`MilterFailure` with Postfix's wording; the chain (sealmail.mta.milter.chain) turns it into
milter_default_action.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sealmail.mta.milter.settings import Endpoint, MilterSettings
from sealmail.proto.milter import (
    MilterProtocolError,
    MilterSession,
    PacketReader,
    Stage,
    Verdict,
    decode_reply,
)
from sealmail.proto.milter.codec import Reply

log = logging.getLogger("sealmail.mta.milter")
_READ = 65536


class MilterFailure(Exception):
    """The milter cannot be used for the rest of this session."""


class MilterClient:
    def __init__(self, endpoint: Endpoint, settings: MilterSettings) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.session = MilterSession(protocol_version=settings.version, my_events=settings.events,
                                     max_edit_octets=settings.max_edit_octets)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._packets = PacketReader()
        self._pending: list[tuple[bytes, bytes]] = []

    @property
    def name(self) -> str:
        return self.endpoint.name

    async def open(self) -> None:
        """Connect and negotiate within milter_connect_timeout."""
        endpoint = self.endpoint
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                if endpoint.path:
                    self._reader, self._writer = await asyncio.open_unix_connection(endpoint.path)
                else:
                    self._reader, self._writer = await asyncio.open_connection(
                        endpoint.host, endpoint.port)
        except (OSError, TimeoutError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "timed out"
            raise MilterFailure(f"connect to Milter service {self.name}: {reason}") from None
        self._write(self.session.start())
        reply = await self._next_reply("SMFIC_OPTNEG", self.settings.connect_timeout)
        try:
            self.session.negotiate(reply)
        except MilterProtocolError as exc:
            raise MilterFailure(f"milter {self.name}: {exc}") from None

    async def event(self, stage: Stage, packet: object, macros: tuple[tuple[bytes, bytes], ...],
                    timeout: float) -> Verdict | None:
        """Send one event; its verdict, or None when no reply is owed (or it was not sent)."""
        out, owed = self.session.event(stage, packet, macros)
        if out:
            self._write(out)
        if not owed:
            return None
        what = f"SMFIC_{stage.name}"
        while True:
            reply = await self._next_reply(what, timeout)
            try:
                verdict = self.session.receive(reply)
            except MilterProtocolError as exc:
                raise MilterFailure(f"milter {self.name}: {exc}") from None
            if verdict is not None:
                return verdict

    def abort(self) -> None:
        out = self.session.abort()
        if out and self._writer is not None:
            self._write(out)

    async def close(self) -> None:
        writer = self._writer
        self._writer = None
        if writer is None:
            return
        with contextlib.suppress(OSError, MilterFailure):
            writer.write(self.session.quit())
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(self.settings.command_timeout):
                await writer.wait_closed()

    def _write(self, data: bytes) -> None:
        if self._writer is None:
            raise MilterFailure(f"milter {self.name}: not connected")
        self._writer.write(data)

    async def _next_reply(self, what: str, timeout: float) -> Reply:
        assert self._reader is not None and self._writer is not None
        try:
            async with asyncio.timeout(timeout):
                await self._writer.drain()
                while not self._pending:
                    data = await self._reader.read(_READ)
                    if not data:
                        raise MilterFailure(f"milter {self.name}: can't read {what} reply packet "
                                            "header: Connection closed by peer")
                    self._pending += self._packets.feed(data)
        except TimeoutError:
            raise MilterFailure(f"milter {self.name}: can't read {what} reply packet header: "
                                "Connection timed out") from None
        except OSError as exc:
            raise MilterFailure(f"milter {self.name}: can't read {what} reply packet header: "
                                f"{exc.strerror or exc}") from None
        except MilterProtocolError as exc:
            raise MilterFailure(f"milter {self.name}: {exc}") from None
        code, data = self._pending.pop(0)
        try:
            return decode_reply(code, data)
        except MilterProtocolError as exc:
            raise MilterFailure(f"milter {self.name}: {exc}") from None

    def hang_up(self) -> None:
        """After a failure: drop the connection without a goodbye."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
