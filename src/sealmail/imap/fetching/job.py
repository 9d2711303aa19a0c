"""What every way of answering a FETCH shares: the command's `Job`, the chunks the responses
are streamed in, and the values written the same way by all (INTERNALDATE, FLAGS, body text)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sealmail.imap.selected import SelectedMailbox
from sealmail.proto.imap import FetchAttribute
from sealmail.store.api import MessageRecord

if TYPE_CHECKING:
    from sealmail.imap.session import ImapSession

__all__ = ["BODY_CHUNKS", "CHUNKS", "INDEX_ITEMS", "RECORD_ITEMS", "Job", "chunks",
           "internaldate_text", "render_flags", "textual"]

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Items the index answers (no file, no parse); those needing the message record, not the view.
INDEX_ITEMS = frozenset({"UID", "FLAGS", "MODSEQ", "INTERNALDATE", "RFC822.SIZE"})
RECORD_ITEMS = frozenset({"INTERNALDATE", "RFC822.SIZE"})
# Messages per chunk handed to the client while the rest is built: small first, so the first
# octets leave at once and the client works while the server does, then larger ones.
CHUNKS = (256, 1024, 4096)
# Files read per chunk when whole messages are sent: small, so the client starts at once and
# never waits long (bench/imap_throughput.py, 100 bodies of 3 KiB: best of 4..100 per chunk).
BODY_CHUNKS = (8, 28)


def internaldate_text(timestamp: float) -> str:
    """date-time of RFC 9051 9, in UTC: "17-Jul-1996 09:44:25 +0000". `time.gmtime` of the
    whole second (a quarter of datetime's cost: FETCH INTERNALDATE of a folder calls it per
    message), except where datetime, which rounds to the microsecond, would reach the next
    second or the time is before 1970: there datetime, as always."""
    whole = int(timestamp)
    if timestamp < 0 or timestamp - whole >= 0.9999995:
        when = datetime.fromtimestamp(timestamp, UTC)
        return (f"{when.day:2d}-{MONTHS[when.month - 1]}-{when.year:04d} "
                f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} +0000")
    tm = time.gmtime(whole)
    return "%2d-%s-%04d %02d:%02d:%02d +0000" % (  # noqa: UP031 (f-strings: slower here)
        tm.tm_mday, MONTHS[tm.tm_mon - 1], tm.tm_year, tm.tm_hour, tm.tm_min, tm.tm_sec)


def render_flags(flags: Sequence[str]) -> bytes:
    """A flag list as FLAGS sends it: `(\\Seen $Label1)` (flags are atoms)."""
    return b"(" + " ".join(flags).encode("utf-8") + b")"


def textual(data: bytes) -> bytes:
    """Message octets for a BODY, BODY.PEEK, RFC822 or RFC822.* item, whose value is a string
    (RFC 9051 9: `nstring`), never RFC 3516's literal8: and a string cannot hold NUL ("CHAR8 =
    %x01-ff", RFC 9051 4.3), which only BINARY's literal8 can carry. A message stored with NUL
    (an APPEND of binary content, `~{n}`) shows each as 0x80 there, as Dovecot does; one for
    one, so that sizes and partial offsets stay those of the message."""
    return data.replace(b"\0", b"\x80") if b"\0" in data else data


def chunks(positions: list[int], body: bool = False) -> Iterator[list[int]]:
    sizes = BODY_CHUNKS if body else CHUNKS
    start = 0
    for size in (*sizes, *([sizes[-1]] * (len(positions) // sizes[-1] + 1))):
        if start >= len(positions):
            return
        yield positions[start : start + size]
        start += size


class Job:
    """What one FETCH needs while it builds its responses."""

    def __init__(self, session: ImapSession, view: SelectedMailbox,
                 attributes: list[FetchAttribute], positions: list[int],
                 seen_now: set[int]) -> None:
        self.session = session
        self.view = view
        self.store = session.store
        self.attributes = attributes
        self.positions = positions
        self.seen_now = seen_now  # uids whose \Seen this FETCH set
        self.extra: list[FetchAttribute] = []  # items added to the responses of seen_now
        if seen_now:
            if not any(a.name == "FLAGS" for a in attributes):
                self.extra.append(FetchAttribute("FLAGS"))  # RFC 9051 6.4.5: \Seen was set
            if session.condstore and not any(a.name == "MODSEQ" for a in attributes):
                self.extra.append(FetchAttribute("MODSEQ"))
        # Each distinct flag set rendered once (for the session: sets are only added).
        self.rendered_flags = view.rendered_flag_sets(render_flags)

    def flags_bytes(self, flag_id: int) -> bytes:
        return self.rendered_flags[flag_id]

    def records(self, uids: list[int]) -> dict[int, MessageRecord]:
        return {r.uid: r for r in self.store.message_records(self.view.name, uids)}
