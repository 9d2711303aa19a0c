"""The Sendmail milter protocol's packets (version 6, as Postfix speaks it), without I/O.

Theory of operation: every packet on the wire is a 4-octet big-endian length, then one command
octet, then `length - 1` octets of data. The MTA sends commands (SMFIC_*: OPTNEG, CONNECT, HELO,
MAIL, RCPT, DATA, HEADER, EOH, BODY, EOB, ABORT, QUIT, MACRO, UNKNOWN); the milter answers with
replies (SMFIR_*: CONTINUE, ACCEPT, REJECT, ... and at end of message the modification requests).
Strings are NUL-terminated octets; integers are 32-bit big-endian, a port 16-bit. The codec is
symmetric (both sides' packets encode and decode), so that tests can play the milter, and
`decode(encode(x)) == x` for every packet.

A `PacketReader` turns received octets into packets. Its bound on one packet's length (Postfix
allows INT_MAX / 2; we default to 1 MiB + slack: libmilter's largest body chunk with SMFIP_MDS_1M)
is checked on the length word, before anything is buffered.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass

MAX_PACKET = 1024 * 1024 + 1024
BODY_CHUNK = 65535  # Postfix's MILTER_CHUNK_SIZE: libmilter takes at most this by default


class MilterProtocolError(Exception):
    """Octets that are not the milter protocol (bad length, unknown command, bad data)."""


class Action(enum.IntFlag):
    """SMFIF_*: what a milter may ask for, negotiated in OPTNEG."""

    ADDHDRS = 0x01
    CHGBODY = 0x02
    ADDRCPT = 0x04
    DELRCPT = 0x08
    CHGHDRS = 0x10
    QUARANTINE = 0x20
    CHGFROM = 0x40
    ADDRCPT_PAR = 0x80
    SETSYMLIST = 0x100


class ProtocolFlag(enum.IntFlag):
    """SMFIP_*: events the milter does not want (NO*), replies it will not send (NR_*)."""

    NOCONNECT = 1 << 0
    NOHELO = 1 << 1
    NOMAIL = 1 << 2
    NORCPT = 1 << 3
    NOBODY = 1 << 4
    NOHDRS = 1 << 5
    NOEOH = 1 << 6
    NR_HDR = 1 << 7
    NOUNKNOWN = 1 << 8
    NODATA = 1 << 9
    SKIP = 1 << 10
    RCPT_REJ = 1 << 11
    NR_CONN = 1 << 12
    NR_HELO = 1 << 13
    NR_MAIL = 1 << 14
    NR_RCPT = 1 << 15
    NR_DATA = 1 << 16
    NR_UNKN = 1 << 17
    NR_EOH = 1 << 18
    NR_BODY = 1 << 19
    HDR_LEADSPC = 1 << 20
    MDS_256K = 1 << 28
    MDS_1M = 1 << 29


class MacroStage(enum.IntEnum):
    """SMFIM_*: the stages a milter's OPTNEG reply may name macro lists for."""

    CONNECT = 0
    HELO = 1
    ENVFROM = 2
    ENVRCPT = 3
    DATA = 4
    EOM = 5
    EOH = 6


# -- commands (MTA -> milter) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OptNeg:
    """SMFIC_OPTNEG from the MTA; as the milter's reply it may add macro lists per stage."""

    version: int
    actions: int
    protocol: int
    macros: tuple[tuple[int, bytes], ...] = ()  # reply only: (SMFIM_ stage, "{a} {b}")


@dataclass(frozen=True, slots=True)
class Macro:
    """SMFIC_MACRO: the macros for the command `for_command` (its command octet)."""

    for_command: bytes
    pairs: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Connect:
    hostname: bytes
    family: bytes  # b"4", b"6", b"L" (UNIX), b"U" (unknown: no port and no address follow)
    port: int = 0
    address: bytes = b""


@dataclass(frozen=True, slots=True)
class Helo:
    name: bytes


@dataclass(frozen=True, slots=True)
class Mail:
    args: tuple[bytes, ...]  # "<sender>" then ESMTP parameters


@dataclass(frozen=True, slots=True)
class Rcpt:
    args: tuple[bytes, ...]  # "<recipient>" then ESMTP parameters


@dataclass(frozen=True, slots=True)
class Data:
    pass


@dataclass(frozen=True, slots=True)
class Header:
    name: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class EndOfHeaders:
    pass


@dataclass(frozen=True, slots=True)
class Body:
    chunk: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    pass


@dataclass(frozen=True, slots=True)
class Abort:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class QuitNewConnection:
    pass


@dataclass(frozen=True, slots=True)
class Unknown:
    command: bytes


# -- replies (milter -> MTA) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Continue:
    pass


@dataclass(frozen=True, slots=True)
class Accept:
    pass


@dataclass(frozen=True, slots=True)
class Reject:
    pass


@dataclass(frozen=True, slots=True)
class Tempfail:
    pass


@dataclass(frozen=True, slots=True)
class Discard:
    pass


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


@dataclass(frozen=True, slots=True)
class ConnectionFailure:
    pass


@dataclass(frozen=True, slots=True)
class Skip:
    pass


@dataclass(frozen=True, slots=True)
class Progress:
    pass


@dataclass(frozen=True, slots=True)
class ReplyCode:
    text: bytes  # "550 5.7.1 go away", possibly multi-line (CRLF between lines)


@dataclass(frozen=True, slots=True)
class AddHeader:
    name: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class InsertHeader:
    index: int  # 0: above every header
    name: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class ChangeHeader:
    index: int  # the index-th (1-based) header of that name; an empty value deletes it
    name: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class AddRecipient:
    address: bytes
    args: bytes | None = None  # SMFIR_ADDRCPT_PAR's ESMTP arguments


@dataclass(frozen=True, slots=True)
class DeleteRecipient:
    address: bytes


@dataclass(frozen=True, slots=True)
class ChangeFrom:
    address: bytes
    args: bytes | None = None


@dataclass(frozen=True, slots=True)
class ReplaceBody:
    chunk: bytes


@dataclass(frozen=True, slots=True)
class Quarantine:
    reason: bytes


Command = (OptNeg | Macro | Connect | Helo | Mail | Rcpt | Data | Header | EndOfHeaders | Body
           | EndOfMessage | Abort | Quit | QuitNewConnection | Unknown)
Reply = (OptNeg | Continue | Accept | Reject | Tempfail | Discard | Shutdown | ConnectionFailure
         | Skip | Progress | ReplyCode | AddHeader | InsertHeader | ChangeHeader | AddRecipient
         | DeleteRecipient | ChangeFrom | ReplaceBody | Quarantine)
Packet = Command | Reply

# Command octets, by type; the same octet can mean a command and a reply (OPTNEG, b"O").
COMMAND_CODES: dict[type, bytes] = {
    OptNeg: b"O", Macro: b"D", Connect: b"C", Helo: b"H", Mail: b"M", Rcpt: b"R", Data: b"T",
    Header: b"L", EndOfHeaders: b"N", Body: b"B", EndOfMessage: b"E", Abort: b"A", Quit: b"Q",
    QuitNewConnection: b"K", Unknown: b"U",
}
REPLY_CODES: dict[type, bytes] = {
    OptNeg: b"O", Continue: b"c", Accept: b"a", Reject: b"r", Tempfail: b"t", Discard: b"d",
    Shutdown: b"4", ConnectionFailure: b"f", Skip: b"s", Progress: b"p", ReplyCode: b"y",
    AddHeader: b"h", InsertHeader: b"i", ChangeHeader: b"m", DeleteRecipient: b"-",
    ChangeFrom: b"e", ReplaceBody: b"b", Quarantine: b"q",
}
_EMPTY_COMMANDS: dict[bytes, Command] = {
    b"T": Data(), b"N": EndOfHeaders(), b"E": EndOfMessage(), b"A": Abort(), b"Q": Quit(),
    b"K": QuitNewConnection()}
_EMPTY_REPLIES: dict[bytes, Reply] = {
    b"c": Continue(), b"a": Accept(), b"r": Reject(), b"t": Tempfail(), b"d": Discard(),
    b"4": Shutdown(), b"f": ConnectionFailure(), b"s": Skip(), b"p": Progress()}


def _z(value: bytes) -> bytes:
    if b"\0" in value:
        raise ValueError("a milter string cannot contain NUL")
    return value + b"\0"


def _frame(code: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data) + 1) + code + data


def _command_data(packet: Command) -> bytes:
    match packet:
        case OptNeg(version, actions, protocol, macros):
            data = struct.pack(">III", version, actions, protocol)
            return data + b"".join(struct.pack(">I", s) + _z(m) for s, m in macros)
        case Macro(for_command, pairs):
            if len(for_command) != 1:
                raise ValueError("a macro's command is one octet")
            return for_command + b"".join(_z(n) + _z(v) for n, v in pairs)
        case Connect(hostname, family, port, address):
            if family == b"U":
                return _z(hostname) + b"U"
            return _z(hostname) + family + struct.pack(">H", port) + _z(address)
        case Helo(name):
            return _z(name)
        case Mail(args) | Rcpt(args):
            return b"".join(_z(a) for a in args)
        case Header(name, value):
            return _z(name) + _z(value)
        case Body(chunk):
            return chunk
        case Unknown(command):
            return _z(command)
    return b""


def encode_command(packet: Command) -> bytes:
    """The octets of one command packet (the MTA's side)."""
    return _frame(COMMAND_CODES[type(packet)], _command_data(packet))


def _reply_data(packet: Reply) -> tuple[bytes, bytes]:
    match packet:
        case OptNeg():
            return b"O", _command_data(packet)
        case ReplyCode(text):
            return b"y", _z(text)
        case AddHeader(name, value):
            return b"h", _z(name) + _z(value)
        case InsertHeader(index, name, value):
            return b"i", struct.pack(">I", index) + _z(name) + _z(value)
        case ChangeHeader(index, name, value):
            return b"m", struct.pack(">I", index) + _z(name) + _z(value)
        case AddRecipient(address, None):
            return b"+", _z(address)
        case AddRecipient(address, args):
            return b"2", _z(address) + _z(args or b"")
        case DeleteRecipient(address):
            return b"-", _z(address)
        case ChangeFrom(address, args):
            return b"e", _z(address) + (b"" if args is None else _z(args))
        case ReplaceBody(chunk):
            return b"b", chunk
        case Quarantine(reason):
            return b"q", _z(reason)
    return REPLY_CODES[type(packet)], b""


def encode_reply(packet: Reply) -> bytes:
    """The octets of one reply packet (the milter's side; tests play milters with it)."""
    return _frame(*_reply_data(packet))


# -- decoding -----------------------------------------------------------------------------------


class _Fields:
    """Reads NUL-terminated strings and integers off one packet's data."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.at = 0
        self.what = what

    def string(self) -> bytes:
        end = self.data.find(b"\0", self.at)
        if end < 0:
            raise MilterProtocolError(f"{self.what}: missing string null terminator")
        value = self.data[self.at : end]
        self.at = end + 1
        return value

    def integer(self, size: int = 4) -> int:
        if self.at + size > len(self.data):
            raise MilterProtocolError(f"{self.what}: packet too short for an integer")
        value = int.from_bytes(self.data[self.at : self.at + size], "big")
        self.at += size
        return value

    def octet(self) -> bytes:
        if self.at >= len(self.data):
            raise MilterProtocolError(f"{self.what}: packet too short")
        self.at += 1
        return self.data[self.at - 1 : self.at]

    @property
    def more(self) -> bool:
        return self.at < len(self.data)

    def end(self) -> None:
        if self.more:
            raise MilterProtocolError(f"{self.what}: {len(self.data) - self.at} octets too many")

    def strings(self) -> tuple[bytes, ...]:
        values = []
        while self.more:
            values.append(self.string())
        return tuple(values)


def _optneg(fields: _Fields) -> OptNeg:
    version, actions, protocol = fields.integer(), fields.integer(), fields.integer()
    macros = []
    while fields.more:
        macros.append((fields.integer(), fields.string()))
    return OptNeg(version, actions, protocol, tuple(macros))


def decode_command(code: bytes, data: bytes) -> Command:
    """One command packet's code and data (the milter's side)."""
    if code in _EMPTY_COMMANDS:
        if data:
            raise MilterProtocolError(f"command {code!r}: unexpected data")
        return _EMPTY_COMMANDS[code]
    fields = _Fields(data, f"command {code!r}")
    if code == b"O":
        return _optneg(fields)
    if code == b"D":
        for_command = fields.octet()
        values = fields.strings()
        if len(values) % 2:
            raise MilterProtocolError("macro: a name without a value")
        return Macro(for_command, tuple(zip(values[::2], values[1::2], strict=True)))
    if code == b"C":
        hostname, family = fields.string(), fields.octet()
        if family == b"U":
            fields.end()
            return Connect(hostname, family)
        if family not in (b"4", b"6", b"L"):
            raise MilterProtocolError(f"connect: unknown address family {family!r}")
        port = fields.integer(2)
        address = fields.string()
        fields.end()
        return Connect(hostname, family, port, address)
    if code in (b"H", b"U"):
        value = fields.string()
        fields.end()
        return Helo(value) if code == b"H" else Unknown(value)
    if code in (b"M", b"R"):
        args = fields.strings()
        if not args:
            raise MilterProtocolError(f"command {code!r}: no address")
        return Mail(args) if code == b"M" else Rcpt(args)
    if code == b"L":
        name, value = fields.string(), fields.string()
        fields.end()
        return Header(name, value)
    if code == b"B":
        return Body(data)
    raise MilterProtocolError(f"unknown command {code!r}")


def _header_change(code: bytes, fields: _Fields) -> Reply:
    index = fields.integer() if code in (b"i", b"m") else 0
    name, value = fields.string(), fields.string()
    fields.end()
    if code == b"h":
        return AddHeader(name, value)
    if code == b"i":
        return InsertHeader(index, name, value)
    return ChangeHeader(index, name, value)


def decode_reply(code: bytes, data: bytes) -> Reply:
    """One reply packet's code and data (the MTA's side)."""
    if code in _EMPTY_REPLIES:
        if data:
            raise MilterProtocolError(f"reply {code!r}: unexpected data")
        return _EMPTY_REPLIES[code]
    fields = _Fields(data, f"reply {code!r}")
    if code == b"O":
        return _optneg(fields)
    if code == b"b":
        return ReplaceBody(data)
    if code in (b"h", b"i", b"m"):
        return _header_change(code, fields)
    single: dict[bytes, Callable[[bytes], Reply]] = {
        b"y": ReplyCode, b"+": AddRecipient, b"-": DeleteRecipient, b"q": Quarantine}
    if code in single:
        value = fields.string()
        fields.end()
        return single[code](value)
    if code in (b"2", b"e"):
        address = fields.string()
        args = fields.string() if fields.more else None
        fields.end()
        if code == b"2":
            return AddRecipient(address, args or b"")
        return ChangeFrom(address, args)
    raise MilterProtocolError(f"unknown reply {code!r}")


class PacketReader:
    """Received octets in, whole packets out (as (code, data)); bounded by `max_packet`."""

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        self.max_packet = max_packet
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """Every packet now complete; MilterProtocolError on a length of 0 or past the bound
        (checked as soon as the length word is in, before the data is kept)."""
        self._buffer += data
        packets = []
        while len(self._buffer) >= 4:
            length = int.from_bytes(self._buffer[:4], "big")
            if length < 1:
                raise MilterProtocolError(f"bad packet length: {length}")
            if length > self.max_packet:
                raise MilterProtocolError(
                    f"unreasonable packet length: {length} > {self.max_packet}")
            if len(self._buffer) < 4 + length:
                break
            packet = bytes(self._buffer[4 : 4 + length])
            del self._buffer[: 4 + length]
            packets.append((packet[:1], packet[1:]))
        return packets

    @property
    def pending(self) -> int:
        """Octets received that do not yet make a whole packet (a truncated packet at EOF)."""
        return len(self._buffer)
