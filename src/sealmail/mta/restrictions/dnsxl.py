"""DNS block and allow lists (reject_rbl_client, reject_rhsbl_*, permit_dnswl_client).

A client address 192.0.2.1 is asked as `1.2.0.192.zone` (IPv6: 32 reversed nibbles), a domain
as `domain.zone`, for an A record. `zone=127.0.0.2` or `zone=127.0.0.[2..11;20]` accepts only
those answers (Postfix's ip_match). The refusal text is default_rbl_reply (or rbl_reply_maps'
template for the zone), with $rbl_code, $rbl_class, $rbl_what, $rbl_domain, $rbl_reason (the TXT
record) expanded, and ${name?text} / ${name:text} as Postfix has them.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.restrictions.evaluator import Scope, Session
from sealmail.mta.restrictions.model import Status

log = logging.getLogger("sealmail.mta.smtpd")

__all__ = ["Listing", "address_query", "domain_query", "expand_template", "reply_matches"]


@dataclass(frozen=True, slots=True)
class Listing:
    """A list's answer: listed (with its TXT reason), not listed, or the DNS failed."""

    listed: bool
    temporary: bool = False
    reason: str = ""


def address_query(address: str, zone: str) -> str:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return ".".join(reversed(str(ip).split("."))) + "." + zone
    return ".".join(reversed(ip.exploded.replace(":", ""))) + "." + zone


def domain_query(what: str, zone: str) -> str | None:
    """The name to ask for a domain (or the domain of an address); None where Postfix skips:
    an address literal, a numeric last label, a name that is no hostname."""
    domain = what.rpartition("@")[2] if "@" in what else what
    domain = domain.rstrip(".")
    if not domain or domain.startswith("[") or domain.rpartition(".")[2].isdigit():
        return None
    if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", domain):
        return None
    return f"{domain}.{zone}"


def _octet_matches(pattern: str, value: int) -> bool:
    if pattern.startswith("[") and pattern.endswith("]"):
        for part in pattern[1:-1].split(";"):
            low, sep, high = part.partition("..")
            if sep and int(low) <= value <= int(high):
                return True
            if not sep and int(part) == value:
                return True
        return False
    return int(pattern) == value


def reply_matches(pattern: str, answer: str) -> bool:
    """Postfix's ip_match: `127.0.0.2`, `127.0.0.[2..11]`, `127.0.0.[2;4;6..8]`."""
    octets = re.findall(r"\[[^\]]*\]|[^.]+", pattern)
    values = answer.split(".")
    if len(octets) != 4 or len(values) != 4:
        return False
    try:
        return all(_octet_matches(p, int(v)) for p, v in zip(octets, values, strict=True))
    except ValueError:
        return False


_NAME = re.compile(r"\$(?:\{(\w+)(?:([?:])([^}]*))?\}|(\w+))")


def expand_template(template: str, values: dict[str, str]) -> str:
    """$name, ${name}, ${name?text} (text when name is non-empty), ${name:text} (when empty)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        value = values.get(name, "")
        if match.group(2) == "?":
            return expand_template(match.group(3), values) if value else ""
        if match.group(2) == ":":
            return "" if value else expand_template(match.group(3), values)
        return value

    return _NAME.sub(one, template)


async def lookup(session: Session, query: str) -> Listing:
    """Ask for the A records of `query`; match them against the `=pattern`; fetch the TXT."""
    from sealmail.mta.dns import DnsError, TemporaryDnsError

    name, _, pattern = query.partition("=")
    resolver = session.engine.resolver
    assert resolver is not None  # the engine has one when a DNS check is configured
    try:
        answers = [str(a) for a in await resolver.addresses(name, (4,))]
    except TemporaryDnsError:
        return Listing(False, temporary=True)
    except DnsError:
        return Listing(False)
    if pattern and not any(reply_matches(pattern, a) for a in answers):
        return Listing(False)
    try:
        reason = " ".join(await resolver.txt(name))
    except DnsError:
        reason = ""
    return Listing(True, reason=reason)


async def reject_listed(session: Session, zone: str, query: str | None, what: str,
                        reply_class: str, scope: Scope) -> Status:
    """reject_rbl_client / reject_rhsbl_*: refuse with the zone's reply template."""
    if query is None:
        return Status.DUNNO
    listing = await lookup(session, query)
    if not listing.listed:
        return Status.DUNNO
    engine = session.engine
    domain = zone.partition("=")[0]
    template = None
    try:
        for table in engine.rbl_reply_maps:
            template = table.lookup(zone) or (table.lookup(domain) if zone != domain else None)
            if template is not None:
                break
    except ConfigError as exc:
        log.warning("rbl_reply_maps lookup failed: %s", exc)
        return session.server_error()
    values = {"rbl_code": str(engine.codes.maps_rbl), "rbl_domain": domain,
              "rbl_reason": listing.reason, "rbl_txt": listing.reason, "rbl_what": what,
              "rbl_class": reply_class, "client_address": session.facts.client_address,
              "client_name": session.facts.names.name, "helo_name": session.facts.helo or "",
              "sender": session.facts.sender or "", "recipient": session.facts.recipient or ""}
    reply = expand_template(template or engine.default_rbl_reply, values)
    match = re.match(r"([45][0-9][0-9]) (.*)", reply)
    if not match:
        log.warning("rbl response code configuration error: %s", reply)
        return session.reject("policy", 450, "4.7.1", "Service unavailable")
    code, rest = int(match.group(1)), match.group(2)
    dsn_match = re.match(r"([245]\.[0-9]{1,3}\.[0-9]{1,3}) ", rest)
    dsn = dsn_match.group(1) if dsn_match else "4.7.1"
    text = rest[dsn_match.end():] if dsn_match else rest
    return session.reject("policy", code, dsn, text or "Service unavailable")


async def permit_listed(session: Session, zone: str, query: str | None, what: str,
                        scope: Scope) -> Status:
    """permit_dnswl_client / permit_rhswl_client: OK when listed, never for a recipient that
    is not ours (Postfix's safety: an allow list must not open the relay)."""
    facts = session.facts
    if query is None:
        return Status.DUNNO
    if facts.recipient is not None:
        domain = facts.recipient.rpartition("@")[2]
        if not session.engine.routing.is_authorized_destination(domain):
            return Status.DUNNO
    listing = await lookup(session, query)
    if listing.temporary:
        return session.defer_reject(450, "4.7.1",
                                    f"<{what}>: {scope.reply_class} rejected: Service unavailable")
    return Status.OK if listing.listed else Status.DUNNO
