"""What a delivery agent reads before it connects: the next hop, SASL passwords, its parameters.

Split from session.py (issue 19: no module over ~800 lines). This is the configuration side of
the lmtp and smtp agents: parsing `unix:`/`inet:`/`[host]:port` next hops, looking up
`*_sasl_password_maps`, and reading a parameter family (LMTP_CLIENT or SMTP_CLIENT) into one
`Policy` per configuration. It does no I/O beyond opening lookup tables; session.py holds the
sessions, the connection cache and the transaction that use it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sealmail.config.services import DEFAULT_SERVICES_FILE, UnknownService, service_port
from sealmail.mta.agents import DeliveryRequest, tls_policy
from sealmail.mta.agents.tls_policy import TlsPolicy, TlsPolicyError
from sealmail.mta.config import MainConfig, TableError, open_table
from sealmail.mta.config.parameters import MAIN, ClientParameters, Parameter

__all__ = [
    "Delivery",
    "Endpoint",
    "NexthopError",
    "Policy",
    "Timeouts",
    "parse_nexthop",
    "plan_delivery",
    "read_policy",
    "sasl_password",
    "sasl_password_keys",
]

log = logging.getLogger("sealmail.mta.agents")


class NexthopError(ValueError):
    """A next hop we cannot parse: a configuration error, so the mail waits (4.3.5)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect: a UNIX socket path, or a host (name or address literal) and port,
    with the address to use when DNS already chose it (an MX host's)."""

    path: str | None = None
    host: str = ""
    port: int = 0
    written: str = ""  # a UNIX socket path as configured (relative ones stay so in logs)
    bracketed: bool = False  # `[host]`: no MX lookup (RFC 5321 5.1)
    address: str = ""  # resolved: connect here, show as host[address]:port

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    def display(self) -> str:
        return self.path if self.path is not None else f"{self.host}:{self.port}"


def _port(text: str, default_port: int, whole: str,
          services_file: str | os.PathLike[str]) -> int:
    if not text:
        return default_port
    if text.isdigit():
        port = int(text)
        if 0 < port < 65536:
            return port
        raise NexthopError(f"bad port in next hop {whole!r}")
    try:
        # inet:host:service, looked up in the services file as Postfix does, with IANA's port
        # for a mail service the file lacks (Debian's has no lmtp).
        return service_port(text, services_file)
    except UnknownService as exc:
        raise NexthopError(f"{exc} in next hop {whole!r}") from None


def parse_nexthop(
    nexthop: str, *, default_port: int, queue_directory: str, unix_allowed: bool = True,
    services_file: str | os.PathLike[str] = DEFAULT_SERVICES_FILE,
) -> Endpoint:
    """`unix:/abs`, `unix:rel` (to the queue directory), `inet:host[:port]`, `inet:[addr]:port`,
    `[host]:port`, `host:port`, `host`. Postfix's lmtp takes `inet:` as the default type."""
    text = nexthop.strip()
    if not text:
        raise NexthopError("empty next hop")
    kind, sep, rest = text.partition(":")
    if sep and kind in ("unix", "inet"):
        if kind == "unix":
            if not unix_allowed:
                raise NexthopError(f"unix: next hop {nexthop!r} is not supported by this agent")
            if not rest:
                raise NexthopError(f"empty socket path in next hop {nexthop!r}")
            path = rest if rest.startswith("/") else str(Path(queue_directory) / rest)
            return Endpoint(path=path, written=rest)
        text = rest
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise NexthopError(f"missing ']' in next hop {nexthop!r}")
        host, after = text[1:close], text[close + 1 :]
        if after and not after.startswith(":"):
            raise NexthopError(f"junk after ']' in next hop {nexthop!r}")
        port = _port(after[1:], default_port, nexthop, services_file)
    else:
        host, _, service = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
        if not host:
            host, service = text, ""
        port = _port(service, default_port, nexthop, services_file)
    if host.lower().startswith("ipv6:"):
        host = host[5:]
    if not host or any(c.isspace() for c in host):
        raise NexthopError(f"bad host in next hop {nexthop!r}")
    return Endpoint(host=host, port=port, bracketed=text.startswith("["))


def sasl_password_keys(nexthop: str, endpoint: Endpoint) -> list[str]:
    """The password map keys for this next hop, in the order tried: the next hop as written
    (without `inet:`/`unix:`), then `host:port`, `[host]:port`, then `host` (seed 2.2.1.2:
    `cyrus.example.com lmtpuser:PASSWORD`)."""
    written = nexthop.split(":", 1)[1] if nexthop.startswith(("inet:", "unix:")) else nexthop
    keys = [written]
    if not endpoint.is_unix:
        keys += [f"{endpoint.host}:{endpoint.port}", f"[{endpoint.host}]:{endpoint.port}",
                 endpoint.host]
    return list(dict.fromkeys(keys))


def sasl_password(settings: MainConfig, maps: Parameter[tuple[str, ...]], nexthop: str,
                  endpoint: Endpoint) -> tuple[str, str] | None:
    """`user:password` for this next hop from `*_sasl_password_maps`, or None; the first key
    of `sasl_password_keys` found in the first map that has one wins."""
    keys = sasl_password_keys(nexthop, endpoint)
    for spec in settings.get(maps):
        table = open_table(spec)
        for key in keys:
            value = table.lookup(key)
            if value is not None:
                user, sep, password = value.strip().partition(":")
                if not sep or not user:
                    raise TableError(spec, 0, key, "value must be user:password")
                return user, password
    return None


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float | None
    hello: float
    starttls: float
    mail: float
    rcpt: float
    data_init: float
    data_xfer: float
    data_done: float
    rset: float
    quit: float

    @classmethod
    def of(cls, settings: MainConfig, family: ClientParameters) -> Timeouts:
        def t(parameter: Parameter[int]) -> float:
            return float(settings.get(parameter))

        f = family
        connect = t(f.connect_timeout)
        return cls(
            connect=connect or None,  # lmtp's 0s: the system's own limit
            hello=t(f.hello_timeout), starttls=t(f.starttls_timeout), mail=t(f.mail_timeout),
            rcpt=t(f.rcpt_timeout), data_init=t(f.data_init_timeout),
            data_xfer=t(f.data_xfer_timeout), data_done=t(f.data_done_timeout),
            rset=t(f.rset_timeout), quit=t(f.quit_timeout),
        )


@dataclass(frozen=True, slots=True)
class Policy:
    """The parameters of one delivery, read once from the request's settings."""

    timeouts: Timeouts
    hello_name: str
    tls: TlsPolicy  # main.cf's; a policy table may give a next hop another
    tls_defaults: tls_policy.Defaults
    tls_tables: tuple[tuple[str, Callable[[str], str | None]], ...]
    tls_cafile: str
    tls_capath: str
    tls_append_default_ca: bool
    tls_cert: str
    tls_key: str
    tls_loglevel: int
    sasl_enabled: bool
    sasl_options: tuple[str, ...]
    sasl_filter: tuple[str, ...]
    cache: bool
    cache_destinations: tuple[str, ...]
    cache_time: float
    reuse_time: float
    skip_quit_response: bool
    session_limit: int  # smtp_mx_session_limit (0: none): sessions past the handshake

    @property
    def trust_anchors(self) -> bool:
        return tls_policy.has_trust_anchors(self.tls_cafile, self.tls_capath,
                                            self.tls_append_default_ca)


def read_policy(parameters: ClientParameters, settings: MainConfig) -> Policy:
    """A transport's parameters (its family's TLS, SASL, cache and timeout settings) from one
    configuration."""
    f = parameters
    defaults = tls_policy.Defaults(
        verify_match=settings.get(f.tls_verify_cert_match),
        secure_match=settings.get(f.tls_secure_cert_match),
        protocols=settings.get(f.tls_protocols),
        mandatory_protocols=settings.get(f.tls_mandatory_protocols),
        servername=settings.get(f.tls_servername).strip(),
    )
    try:
        tls = tls_policy.global_policy(settings.get(f.tls_security_level), defaults)
    except TlsPolicyError as exc:  # main.cf's own: a configuration error, not a table's
        raise ValueError(f"{f.tls_security_level.name}: {exc}") from None
    tables = tuple((spec, open_table(spec).lookup)
                   for spec in settings.get(f.tls_policy_maps))
    cache = settings.get(f.connection_cache_on_demand)
    skip_quit = settings.get(f.skip_quit_response)
    return Policy(
        timeouts=Timeouts.of(settings, f),
        hello_name=settings.get(f.hello_name),
        tls=tls,
        tls_defaults=defaults,
        tls_tables=tables,
        tls_cafile=settings.get(f.tls_CAfile),
        tls_capath=settings.get(f.tls_CApath),
        tls_append_default_ca=settings.get(MAIN.tls_append_default_CA),
        tls_cert=settings.get(f.tls_cert_file),
        tls_key=settings.get(f.tls_key_file),
        tls_loglevel=settings.get(f.tls_loglevel),
        sasl_enabled=settings.get(f.sasl_auth_enable),
        sasl_options=settings.get(f.sasl_security_options),
        sasl_filter=settings.get(f.sasl_mechanism_filter),
        cache=cache,
        cache_destinations=settings.get(f.connection_cache_destinations),
        cache_time=float(settings.get(f.connection_cache_time_limit)),
        reuse_time=float(settings.get(f.connection_reuse_time_limit)),
        skip_quit_response=skip_quit,
        session_limit=settings.get(MAIN.smtp_mx_session_limit) if f.prefix == "smtp" else 0,
    )


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one delivery request resolved to before any server is tried."""

    nexthop: str  # as routed: "inet:host:port", "example.com", "[relay]:587"
    policy_key: str  # the next hop without inet:, the TLS policy table's key
    domain: str  # the next hop's host or domain: TLS's "nexthop" name
    tls: TlsPolicy
    credentials: tuple[str, str] | None
    no_password: str | None


def plan_delivery(parameters: ClientParameters, request: DeliveryRequest, policy: Policy,
                  nexthop: str, endpoint: Endpoint) -> Delivery:
    """The TLS policy (a `*_tls_policy_maps` entry may override main.cf's) and SASL
    credentials for this next hop."""
    written = nexthop.split(":", 1)[1] if nexthop.startswith(("inet:", "unix:")) else nexthop
    tls = policy.tls
    if policy.tls_tables:
        tls = tls_policy.lookup_policy(written.strip(), policy.tls_tables, tls,
                                       policy.tls_defaults)
    credentials = (
        sasl_password(request.settings, parameters.sasl_password_maps, nexthop,
                      endpoint)
        if policy.sasl_enabled else None
    )
    no_password = (
        _no_password(parameters, request, nexthop, endpoint)
        if policy.sasl_enabled and credentials is None else None
    )
    domain = endpoint.path or endpoint.host
    return Delivery(nexthop, written.strip(), domain, tls, credentials, no_password)


def _no_password(parameters: ClientParameters, request: DeliveryRequest, nexthop: str,
                 endpoint: Endpoint) -> str:
    """Say which keys the password maps lacked (Postfix tells only with -v, yet a wrong key,
    as the seed's `cyrus.example.com` against a next hop `localhost`, fails silently);
    the words also go into a 530 reply's bounce or defer text."""
    maps = parameters.sasl_password_maps
    what = (f"no SASL password found in {maps.name} "
            f"({' '.join(request.settings.get(maps)) or 'empty'}) "
            f"for the keys {', '.join(sasl_password_keys(nexthop, endpoint))}")
    log.info("%s: %s: %s; delivering without authentication", request.queue_id,
             parameters.prefix, what)
    return what
