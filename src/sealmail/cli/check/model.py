"""The seam `sealmail check` reads: findings, the MTA's next hops and the store's LMTP listeners."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sealmail.config.cyrus_conf import (
    CyrusConf,
    InetAddress,
    Service,
    UnixAddress,
    service_addresses,
)
from sealmail.config.imapd_conf import ImapdConfig
from sealmail.config.services import DEFAULT_SERVICES_FILE, UnknownService, service_port
from sealmail.mta.config.instance import MtaConfig
from sealmail.mta.config.main_cf import MainConfig
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.config.tables import parse_source, split_spec

TRANSPORT_PARAMETERS = ("mailbox_transport", "local_transport", "fallback_transport")


LMTP_PORT = 24  # an inet next hop without a port (Postfix's lmtp_tcp_port)


@dataclass(frozen=True, slots=True)
class Finding:
    path: str
    line: int
    check: str
    message: str

    def render(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.check}: {self.message}"


@dataclass(frozen=True, slots=True)
class NextHop:
    """One `transport:nexthop` value, and where it was written."""

    transport: str
    kind: str  # "unix", "inet" or "" (no next hop: a pipe, local)
    target: str  # the socket path as written, or the host
    port: str | None
    setting: str  # what to call it in a message: `mailbox_transport = ...`
    path: str
    line: int


@dataclass
class Halves:
    mta: MtaConfig | None
    imapd: ImapdConfig | None
    cyrus: CyrusConf | None
    services_file: str = DEFAULT_SERVICES_FILE


def parse_next_hop(value: str, setting: str, path: str, line: int) -> NextHop | None:
    """`cyrus:unix:/p`, `cyrus-inet:inet:host:port`, `lmtp:[addr]:port`, `cyrus-deliver`."""
    value = value.strip()
    if not value:
        return None
    transport, _, rest = value.partition(":")
    kind, target, port = "", "", None
    if rest.startswith("unix:"):
        kind, target = "unix", rest[len("unix:"):]
    elif rest:
        kind = "inet"
        rest = rest.removeprefix("inet:")
        if rest.startswith("["):
            host, _, tail = rest[1:].partition("]")
            target, port = host, tail.removeprefix(":") or None
        else:
            host, _, tail = rest.partition(":")
            target, port = host, tail or None
    return NextHop(transport, kind, target, port, setting, path, line)


def table_sources(
    mta: MtaConfig, parameter: str, view: MainConfig | None = None
) -> Iterator[Path]:
    """The source files (what postmap reads) of the hash/texthash tables a parameter names."""
    config = mta.main if view is None else view
    for spec in config.maps(parameter):
        kind, name = split_spec(spec)
        if kind in ("hash", "btree", "texthash", "cdb", "lmdb", "sqlite") and name:
            yield Path(name)


def next_hops(mta: MtaConfig) -> list[NextHop]:
    hops: list[NextHop] = []
    for name in TRANSPORT_PARAMETERS:
        entry = mta.main.entry(name)
        if entry is None or not entry.line:
            continue
        value = mta.main.expand_text(entry.value, where=entry.path)
        hop = parse_next_hop(value, f"{name} = {entry.value}", entry.path, entry.line)
        if hop is not None:
            hops.append(hop)
    for source in table_sources(mta, "transport_maps"):
        if not source.is_file():
            continue
        for row in parse_source(source.read_text(errors="replace"), str(source)):
            hop = parse_next_hop(row.value, f"{row.key} {row.value}", str(source), row.line)
            if hop is not None:
                hops.append(hop)
    return hops


def lmtp_transports(mta: MtaConfig) -> set[str]:
    return {s.service for s in mta.master_cf if s.type == "unix" and s.command == "lmtp"}


def socket_path(mta: MtaConfig, hop: NextHop) -> Path:
    """A relative socket name lies under queue_directory, chrooted or not (seed 2.1.1)."""
    path = Path(hop.target)
    if path.is_absolute():
        return path
    return Path(mta.main.get(MAIN.queue_directory)) / path


def hop_port(hop: NextHop, services_file: str) -> int | None:
    if hop.port is None:
        return LMTP_PORT
    if hop.port.isdigit():
        return int(hop.port)
    try:
        return service_port(hop.port, services_file)
    except UnknownService:
        return None


@dataclass(frozen=True, slots=True)
class Listener:
    service: Service
    address: UnixAddress | InetAddress

    @property
    def where(self) -> str:
        return f"{self.service.name} at {self.service.path}:{self.service.line}"


def lmtp_listeners(halves: Halves) -> list[Listener]:
    if halves.cyrus is None or halves.imapd is None:
        return []
    found = []
    for service in halves.cyrus.services:
        command = service.command
        if command.subcommand != "lmtpd" and not (
            command.subcommand == "deliver" and "-l" in command.args
        ):
            continue
        for address in service_addresses(service, halves.imapd, halves.services_file):
            if isinstance(address, UnixAddress | InetAddress):
                found.append(Listener(service, address))
    return found
