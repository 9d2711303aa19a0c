"""access(5) tables: which keys a client, a HELO name or an address is looked up under, and what
the value found means (Postfix's check_table_result). Pure except for the table lookups."""

from __future__ import annotations

import ipaddress
import logging
import re

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.restrictions.evaluator import Scope, Session
from sealmail.mta.restrictions.model import Status

log = logging.getLogger("sealmail.mta.smtpd")

__all__ = ["address_keys", "check_access", "domain_keys", "mail_keys", "table_result"]

_HEADER = re.compile(r"[\x21-\x39\x3b-\x7e]+:")  # RFC 5322 2.2: a field name and a colon
_CODE = re.compile(r"[45][0-9][0-9]")
_DSN = re.compile(r"([245]\.[0-9]{1,3}\.[0-9]{1,3})(?:\s+|$)")
# The actions sealmail cannot carry out: a refusal names them, never a silent pass.
UNSUPPORTED_ACTIONS = frozenset({"filter", "bcc", "hangup", "delay"})


def domain_keys(name: str, parent_matches: bool) -> list[str]:
    """`a.b.c`, then its parents: `b.c`, `c` (parent_domain_matches_subdomains names
    smtpd_access_maps, the default) or `.b.c`, `.c`."""
    name = name.lower().rstrip(".")
    keys = [name]
    labels = name.split(".")
    for i in range(1, len(labels)):
        parent = ".".join(labels[i:])
        keys.append(parent if parent_matches else "." + parent)
    return keys


def address_keys(address: str) -> list[str]:
    """`1.2.3.4`, `1.2.3`, `1.2`, `1`; IPv6 `a:b:..:h` and its shorter prefixes of groups."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return [address]
    if isinstance(ip, ipaddress.IPv4Address):
        octets = str(ip).split(".")
        return [".".join(octets[:n]) for n in range(4, 0, -1)]
    groups = ip.exploded.split(":")
    return [str(ip)] + [":".join(g.lstrip("0") or "0" for g in groups[:n]) for n in range(7, 0, -1)]


def mail_keys(address: str, delimiter: str, parent_matches: bool) -> list[str]:
    """Postfix's check_mail_access order: user+ext@domain, user@domain, the domain and its
    parents, user+ext@, user@."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    base = local
    for char in delimiter:
        base = base.split(char, 1)[0]
    keys = [address.lower()]
    if domain:
        keys.append(f"{base}@{domain}".lower())
        keys += domain_keys(domain, parent_matches) if not domain.startswith("[") else [domain]
    keys += [f"{local}@".lower(), f"{base}@".lower()]
    return list(dict.fromkeys(keys))


async def check_access(session: Session, spec: str, keys: list[str], scope: Scope) -> Status:
    """Look `keys` up in order in the table `spec`; the first value found decides."""
    try:
        table = session.engine.table(spec)
    except ConfigError as exc:
        log.warning("%s: %s", spec, exc)
        return session.server_error()
    for key in keys:
        try:
            value = table.lookup(key)
        except ConfigError as exc:
            log.warning("%s: table lookup failed: %s", spec, exc)
            return session.lookup_failed(scope)
        if value is not None:
            return await table_result(session, spec, value, scope)
    return Status.DUNNO


def _split(value: str) -> tuple[str, str]:
    command, _, text = value.strip().partition(" ")
    return command, text.strip()


def _dsn_text(text: str, default: str) -> tuple[str, str]:
    """An optional RFC 3463 code at the start of the text (Postfix's dsn_split)."""
    match = _DSN.match(text)
    if match:
        return match.group(1), text[match.end():]
    return default, text


async def table_result(session: Session, table: str, value: str, scope: Scope) -> Status:
    """What an access table's (or a policy server's) answer means."""
    command, text = _split(value)
    verb = command.upper()
    codes = session.engine.codes
    if verb == "DUNNO":
        return Status.DUNNO
    if verb in ("REJECT", "DEFER"):
        code = codes.map_reject if verb == "REJECT" else codes.map_defer
        dsn, reason = _dsn_text(text, "5.7.1" if verb == "REJECT" else "4.7.1")
        return session.refuse(scope, code, dsn, reason or "Access denied")
    if verb in ("OK", "RELAY") or value.strip().isdigit():
        return Status.OK
    if verb == "PERMIT":  # a restriction name, as access(5) allows
        return Status.OK
    if verb in ("WARN", "INFO"):
        session.log_whatsup(verb.lower(), text)
        return Status.DUNNO
    if verb == "HOLD":
        reason = f"<{scope.reply_name}>: {scope.reply_class} {text or 'triggers HOLD action'}"
        if not session.actions.hold:
            session.log_whatsup("hold", reason)
            session.actions.hold = reason
        return Status.DUNNO
    if verb == "DISCARD":
        reason = f"<{scope.reply_name}>: {scope.reply_class} {text or 'triggers DISCARD action'}"
        session.log_whatsup("discard", reason)
        session.actions.discard = reason
        return Status.OK
    if verb == "REDIRECT":
        if "@" not in text:
            log.warning("access table %s entry \"%s\" requires user@domain target", table, value)
            return Status.DUNNO
        session.log_whatsup("redirect",
                            f"<{scope.reply_name}>: {scope.reply_class} triggers REDIRECT {text}")
        session.actions.redirect = text
        return Status.DUNNO
    if verb == "PREPEND":
        if session.facts.where == "END-OF-MESSAGE":
            log.warning("access table %s: action PREPEND must be used before "
                        "smtpd_end_of_data_restrictions", table)
            return Status.DUNNO
        if not _HEADER.match(text):
            log.warning("access table %s entry \"%s\" requires header: text", table, value)
            return Status.DUNNO
        session.actions.prepend.append(text)
        return Status.DUNNO
    if verb in ("DEFER_IF_PERMIT", "DEFER_IF_REJECT"):
        dsn, reason = _dsn_text(text, "4.7.1")
        remember = session.defer_permit if verb == "DEFER_IF_PERMIT" else session.defer_reject
        return remember(codes.map_defer, dsn, f"<{scope.reply_name}>: {scope.reply_class} "
                        f"rejected: {reason or 'Service unavailable'}")
    if _CODE.fullmatch(command) and text:
        dsn, reason = _dsn_text(text, f"{command[0]}.7.1")
        return session.refuse(scope, int(command), dsn, reason or "Access denied")
    if verb.lower() in UNSUPPORTED_ACTIONS:
        log.warning("access table %s: sealmail does not implement the %s action (entry \"%s\")",
                    table, verb, value)
        return session.server_error()
    if ":" in value:
        log.warning("access table %s has entry with lookup table: %s", table, value)
        log.warning("do not specify lookup tables inside SMTPD access maps")
        log.warning("define a restriction class and specify its name instead.")
        return session.server_error()
    # Anything else is a restriction list, evaluated in place (an empty value once meant OK).
    return await session.evaluate_words(value.replace(",", " ").split(), scope)
