"""The checks a restriction list may name: one `CHECKS` entry each.

To add a check: write `async def name(session, scope, argument) -> Status` (read
`session.facts`, `session.engine`; answer Status.DUNNO/OK, or `session.refuse(...)` /
`session.reject(...)` / `session.defer_permit(...)`), and add one line to CHECKS with the
argument it takes (None, "table", "domain" or "server") and whether it asks the DNS or needs the
client's name. The parameters' refusals (sealmail.mta.config.parameters) read CHECKS' names, so
a new entry is accepted in main.cf at once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sealmail.mta import sender_login
from sealmail.mta.restrictions import dnsxl
from sealmail.mta.restrictions.access import address_keys, check_access, domain_keys, mail_keys
from sealmail.mta.restrictions.evaluator import Scope, Session
from sealmail.mta.restrictions.model import RECIPIENT, SENDER, NameStatus, Stage, Status

__all__ = ["CHECKS", "Check", "valid_hostname"]

log = logging.getLogger("sealmail.mta.smtpd")

CheckFunction = Callable[[Session, Scope, "str | None"], Awaitable[Status]]


@dataclass(frozen=True, slots=True)
class Check:
    run: CheckFunction
    argument: str | None = None  # the next word it takes: "table", "domain" or "server"
    uses_dns: bool = False
    uses_client_name: bool = False


# -- names --------------------------------------------------------------------------------------

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def valid_hostname(name: str) -> bool:
    """Postfix's valid_hostname: labels of letters, digits, '-' and '_', at most 255 octets,
    not all numeric (a trailing dot is allowed)."""
    name = name[:-1] if name.endswith(".") and not name.endswith("..") else name
    if not name or len(name) > 255:
        return False
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return False
    return not all(label.isdigit() for label in labels)


def _valid_address_literal(text: str) -> bool:
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    inner = inner.removeprefix("IPv6:").removeprefix("ipv6:")
    try:
        import ipaddress

        ipaddress.ip_address(inner)
    except ValueError:
        return False
    return True


def _fqdn(name: str, smtputf8: bool) -> bool:
    name = name[:-1] if name.endswith(".") and not name.endswith("..") else name
    if not name or "." not in name:
        return False
    if smtputf8 and not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    return valid_hostname(name)


# -- generic -----------------------------------------------------------------------------------

async def permit(session: Session, scope: Scope, arg: str | None) -> Status:
    return Status.OK


async def dunno(session: Session, scope: Scope, arg: str | None) -> Status:
    return Status.DUNNO


async def reject(session: Session, scope: Scope, arg: str | None) -> Status:
    return session.refuse(scope, session.engine.codes.reject, "5.7.1", "Access denied")


async def defer(session: Session, scope: Scope, arg: str | None) -> Status:
    return session.refuse(scope, session.engine.codes.defer, "4.3.2", "Try again later")


async def defer_if_permit(session: Session, scope: Scope, arg: str | None) -> Status:
    return session.defer_permit(450, "4.7.0", f"<{scope.reply_name}>: {scope.reply_class} "
                                "rejected: defer_if_permit requested")


async def defer_if_reject(session: Session, scope: Scope, arg: str | None) -> Status:
    return session.defer_reject(450, "4.7.0", f"<{scope.reply_name}>: {scope.reply_class} "
                                "rejected: defer_if_reject requested")


async def reject_unauth_pipelining(session: Session, scope: Scope, arg: str | None) -> Status:
    if session.facts.ill_pipelining:
        return session.refuse(scope, 503, "5.5.0", "Improper use of SMTP command pipelining",
                              error_class="protocol")
    return Status.DUNNO


async def reject_plaintext_session(session: Session, scope: Scope, arg: str | None) -> Status:
    if not session.facts.tls_protocol:
        return session.reject("policy", session.engine.codes.plaintext, "4.7.1",
                              "Session encryption is required")
    return Status.DUNNO


async def check_policy_service(session: Session, scope: Scope, arg: str | None) -> Status:
    from sealmail.mta.restrictions.access import table_result

    assert arg is not None
    client = session.engine.policy_clients[arg]
    action = await client.query(session)
    return await table_result(session, arg, action, scope)


# -- the client --------------------------------------------------------------------------------

async def permit_mynetworks(session: Session, scope: Scope, arg: str | None) -> Status:
    return Status.OK if session.engine.in_mynetworks(session.facts.client_address) else Status.DUNNO


async def permit_sasl_authenticated(session: Session, scope: Scope, arg: str | None) -> Status:
    return Status.OK if session.facts.sasl_username else Status.DUNNO


async def reject_unknown_client_hostname(session: Session, scope: Scope,
                                         arg: str | None) -> Status:
    facts = session.facts
    if not facts.client_address or facts.names.name_status is NameStatus.OK:
        return Status.DUNNO
    code = (450 if facts.names.name_status is NameStatus.TEMPORARY
            else session.engine.codes.unknown_client)
    return session.reject("policy", code, "4.7.25", "Client host rejected: cannot find your "
                          f"hostname, [{facts.client_address}]")


async def reject_unknown_reverse_client_hostname(session: Session, scope: Scope,
                                                 arg: str | None) -> Status:
    facts = session.facts
    if not facts.client_address or facts.names.reverse_status is NameStatus.OK:
        return Status.DUNNO
    code = (450 if facts.names.reverse_status is NameStatus.TEMPORARY
            else session.engine.codes.unknown_client)
    return session.reject("policy", code, "4.7.1", "Client host rejected: cannot find your "
                          f"reverse hostname, [{facts.client_address}]")


def _client_scope(session: Session) -> Scope:
    from sealmail.mta.restrictions.model import CLIENT

    return Scope(session.facts.namaddr, CLIENT)


async def check_client_access(session: Session, scope: Scope, arg: str | None) -> Status:
    assert arg is not None
    facts = session.facts
    keys: list[str] = []
    if facts.names.name != "unknown":
        keys += domain_keys(facts.names.name, session.engine.parent_domain_matches)
    if facts.client_address:
        keys += address_keys(facts.client_address)
    return await check_access(session, arg, keys, _client_scope(session))


async def check_reverse_client_hostname_access(session: Session, scope: Scope,
                                               arg: str | None) -> Status:
    assert arg is not None
    facts = session.facts
    if facts.names.reverse_name == "unknown":
        return Status.DUNNO
    from sealmail.mta.restrictions.model import CLIENT

    keys = domain_keys(facts.names.reverse_name, session.engine.parent_domain_matches)
    status = await check_access(session, arg, keys, Scope(facts.names.reverse_name, CLIENT))
    return _no_allowlist(status, "check_reverse_client_hostname_access",
                         facts.names.reverse_name)


def _no_allowlist(status: Status, name: str, target: str) -> Status:
    """An unverified name cannot permit (Postfix's forbid_allowlist)."""
    if status is Status.OK:
        log.warning("restriction %s returns OK for %s", name, target)
        log.warning("this is not allowed for security reasons")
        log.warning("use DUNNO instead of OK if you want to make an exception")
        return Status.DUNNO
    return status


async def reject_rbl_client(session: Session, scope: Scope, arg: str | None) -> Status:
    assert arg is not None
    facts = session.facts
    if not facts.client_address:
        return Status.DUNNO
    query = dnsxl.address_query(facts.client_address, arg)
    return await dnsxl.reject_listed(session, arg, query, facts.client_address, "Client host",
                                     scope)


async def permit_dnswl_client(session: Session, scope: Scope, arg: str | None) -> Status:
    assert arg is not None
    facts = session.facts
    if not facts.client_address:
        return Status.DUNNO
    return await dnsxl.permit_listed(session, arg, dnsxl.address_query(facts.client_address, arg),
                                     facts.client_address, scope)


def _rhsbl(attribute: Callable[[Session], str | None], reply_class: str) -> CheckFunction:
    async def run(session: Session, scope: Scope, arg: str | None) -> Status:
        assert arg is not None
        what = attribute(session)
        if not what or what == "unknown":
            return Status.DUNNO
        return await dnsxl.reject_listed(session, arg, dnsxl.domain_query(what, arg), what,
                                         reply_class, scope)

    return run


async def permit_rhswl_client(session: Session, scope: Scope, arg: str | None) -> Status:
    assert arg is not None
    name = session.facts.names.name
    if name == "unknown":
        return Status.DUNNO
    return await dnsxl.permit_listed(session, arg, dnsxl.domain_query(name, arg), name, scope)


# -- HELO -----------------------------------------------------------------------------------------

async def check_helo_access(session: Session, scope: Scope, arg: str | None) -> Status:
    assert arg is not None
    helo = session.facts.helo
    if helo is None:
        return Status.DUNNO
    from sealmail.mta.restrictions.model import HELO

    keys = domain_keys(helo, session.engine.parent_domain_matches)
    return await check_access(session, arg, keys, Scope(helo, HELO))


async def reject_invalid_helo_hostname(session: Session, scope: Scope, arg: str | None) -> Status:
    helo = session.facts.helo
    if helo is None:
        return Status.DUNNO
    from sealmail.mta.restrictions.model import HELO

    helo_scope = Scope(helo, HELO)
    code = session.engine.codes.invalid_hostname
    if helo.startswith("["):
        if not _valid_address_literal(helo):
            return session.refuse(helo_scope, code, "5.5.2", "invalid ip address")
        return Status.DUNNO
    if not valid_hostname(helo) and not _valid_address_literal(helo):
        return session.refuse(helo_scope, code, "5.5.2", "Invalid name")
    return Status.DUNNO


async def reject_non_fqdn_helo_hostname(session: Session, scope: Scope,
                                        arg: str | None) -> Status:
    helo = session.facts.helo
    if helo is None:
        return Status.DUNNO
    from sealmail.mta.restrictions.model import HELO

    helo_scope = Scope(helo, HELO)
    if helo.startswith("["):
        if not _valid_address_literal(helo):
            return session.refuse(helo_scope, session.engine.codes.invalid_hostname, "5.5.2",
                                  "invalid ip address")
        return Status.DUNNO
    if not _fqdn(helo, session.facts.smtputf8):
        return session.refuse(helo_scope, session.engine.codes.non_fqdn, "5.5.2",
                              "need fully-qualified hostname")
    return Status.DUNNO


async def reject_unknown_helo_hostname(session: Session, scope: Scope,
                                       arg: str | None) -> Status:
    from sealmail.mta.dns import DnsError, NullMx, TemporaryDnsError
    from sealmail.mta.restrictions.model import HELO

    helo = session.facts.helo
    if helo is None:
        return Status.DUNNO
    helo_scope = Scope(helo, HELO)
    if helo.startswith("["):
        return await reject_invalid_helo_hostname(session, scope, arg)
    resolver = session.engine.resolver
    assert resolver is not None
    try:
        await resolver.addresses(helo)
        return Status.DUNNO
    except TemporaryDnsError:
        return _tempfail(session, "helo", helo_scope, "4.7.1", "Host not found")
    except DnsError:
        pass
    try:
        await resolver.mx(helo)
        return Status.DUNNO
    except NullMx:
        return Status.DUNNO  # an MTA's name may have a null MX
    except TemporaryDnsError:
        return _tempfail(session, "helo", helo_scope, "4.7.1", "Host not found")
    except DnsError:
        return session.refuse(helo_scope, session.engine.codes.unknown_hostname, "4.7.1",
                              "Host not found")


def _tempfail(session: Session, kind: str, scope: Scope, dsn: str, reason: str) -> Status:
    """unknown_*_tempfail_action: defer_if_permit (the default) or defer at once."""
    text = f"<{scope.reply_name}>: {scope.reply_class} rejected: {reason}"
    if session.engine.tempfail_actions.get(kind, "defer_if_permit") == "defer":
        return session.reject("policy", 450, dsn, text)
    return session.defer_permit(450, dsn, text)


# -- addresses ----------------------------------------------------------------------------------

async def _unknown_domain(session: Session, address: str, scope: Scope, sender: bool) -> Status:
    from sealmail.mta.dns import DnsError, NullMx, TemporaryDnsError

    domain = address.rpartition("@")[2]
    if not domain or domain.startswith("["):
        return Status.DUNNO
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return Status.DUNNO
    resolver = session.engine.resolver
    assert resolver is not None
    dsn = "4.1.8" if sender else "4.1.2"
    try:
        await resolver.mx(domain)
        return Status.DUNNO
    except NullMx:
        return session.refuse(scope, 550 if sender else 556, "4.7.27" if sender else "4.1.10",
                              f"Domain {domain} does not accept mail (nullMX)")
    except TemporaryDnsError:
        return _tempfail(session, "address", scope, dsn, "Domain not found")
    except DnsError:
        pass
    try:
        await resolver.addresses(domain)
        return Status.DUNNO
    except TemporaryDnsError:
        return _tempfail(session, "address", scope, dsn, "Domain not found")
    except DnsError:
        return session.refuse(scope, session.engine.codes.unknown_address, dsn,
                              "Domain not found")


def _non_fqdn(session: Session, address: str, scope: Scope) -> Status:
    domain = address.rpartition("@")[2] if "@" in address else ""
    if domain.startswith("[") and domain.endswith("]"):
        return Status.DUNNO
    if not _fqdn(domain, session.facts.smtputf8):
        return session.refuse(scope, session.engine.codes.non_fqdn, "4.5.2",
                              "need fully-qualified address")
    return Status.DUNNO


def _envelope_address(session: Session, stage: Stage) -> str | None:
    """The address a sender or recipient check reads: MAIL FROM's, or this RCPT TO's."""
    facts = session.facts
    return facts.sender if stage is SENDER else facts.recipient


def _address_scope(session: Session, stage: Stage) -> Scope | None:
    address = _envelope_address(session, stage)
    return Scope(address, stage) if address else None


def _address_access(stage: Stage) -> CheckFunction:
    """check_sender_access / check_recipient_access: the address's keys (the null sender's:
    smtpd_null_access_lookup_key) in the table."""

    async def run(session: Session, scope: Scope, arg: str | None) -> Status:
        assert arg is not None
        address, engine = _envelope_address(session, stage), session.engine
        if address:
            keys = mail_keys(address, engine.delimiter, engine.parent_domain_matches)
        elif address == "" and stage is SENDER:
            keys = [engine.null_access_key]
        else:
            return Status.DUNNO
        return await check_access(session, arg, keys, Scope(address, stage))

    return run


def _unknown_address_domain(stage: Stage) -> CheckFunction:
    """reject_unknown_sender_domain / reject_unknown_recipient_domain."""

    async def run(session: Session, scope: Scope, arg: str | None) -> Status:
        own = _address_scope(session, stage)
        return Status.DUNNO if own is None else await _unknown_domain(
            session, own.reply_name, own, stage is SENDER)

    return run


def _non_fqdn_address(stage: Stage) -> CheckFunction:
    """reject_non_fqdn_sender / reject_non_fqdn_recipient."""

    async def run(session: Session, scope: Scope, arg: str | None) -> Status:
        own = _address_scope(session, stage)
        return Status.DUNNO if own is None else _non_fqdn(session, own.reply_name, own)

    return run


def _unlisted_address(stage: Stage) -> CheckFunction:
    """reject_unlisted_sender / reject_unlisted_recipient (and check_recipient_maps)."""

    async def run(session: Session, scope: Scope, arg: str | None) -> Status:
        address = _envelope_address(session, stage)
        if not address:
            return Status.DUNNO
        return await session.engine.unlisted(session, address, stage)

    return run


def _sender_login(restriction: str) -> CheckFunction:
    """reject_*_sender_login_mismatch (sealmail.mta.sender_login has Postfix's semantics)."""

    async def check(session: Session, scope: Scope, arg: str | None) -> Status:
        maps, sender = session.engine.sender_logins, session.facts.sender
        if maps is None or not sender:
            return Status.DUNNO
        if not session.engine.sasl_enabled:
            log.warning("restriction `%s' ignored: no SASL support", restriction)
            return Status.DUNNO
        try:
            owners = maps.owners(sender)
        except sender_login.LookupFailure as exc:
            log.warning("%s: %s", restriction, exc)
            failed = sender_login.temporary_failure(sender)
            return session.reject("data", failed.code, failed.enhanced or "", str(failed.text))
        refusal = sender_login.verdict(restriction, sender, session.facts.sasl_username, owners)
        if refusal is None:
            return Status.DUNNO
        return session.reject("policy", refusal.code, refusal.enhanced or "", str(refusal.text))

    return check


async def permit_auth_destination(session: Session, scope: Scope, arg: str | None) -> Status:
    own = _address_scope(session, RECIPIENT)
    if own is None:
        return Status.DUNNO
    domain = own.reply_name.rpartition("@")[2]
    return Status.OK if session.engine.routing.is_authorized_destination(domain) else Status.DUNNO


def _unauth_destination(code_offset: int, dsn: str) -> CheckFunction:
    async def run(session: Session, scope: Scope, arg: str | None) -> Status:
        own = _address_scope(session, RECIPIENT)
        if own is None or await permit_auth_destination(session, scope, arg) is Status.OK:
            return Status.DUNNO
        return session.reject("policy", session.engine.codes.relay - code_offset, dsn,
                              f"<{own.reply_name}>: Relay access denied")

    return run


async def reject_multi_recipient_bounce(session: Session, scope: Scope,
                                        arg: str | None) -> Status:
    facts = session.facts
    already = facts.recipient_count > (0 if facts.where == "RCPT" else 1)
    if facts.sender == "" and already:
        return session.refuse(scope, session.engine.codes.multi_recipient_bounce, "5.5.3",
                              "Multi-recipient bounce")
    return Status.DUNNO


_TABLE, _DOMAIN, _SERVER = "table", "domain", "server"


def _named(run: CheckFunction, argument: str | None = None) -> Check:
    """A check that reads the client's name (smtpd then looks it up at connect)."""
    return Check(run, argument, uses_dns=True, uses_client_name=True)


CHECKS: dict[str, Check] = {
    # generic
    "permit": Check(permit),
    "dunno": Check(dunno),
    "reject": Check(reject),
    "defer": Check(defer),
    "defer_if_permit": Check(defer_if_permit),
    "defer_if_reject": Check(defer_if_reject),
    "reject_unauth_pipelining": Check(reject_unauth_pipelining),
    "reject_plaintext_session": Check(reject_plaintext_session),
    "check_policy_service": _named(check_policy_service, _SERVER),
    # the client
    "permit_mynetworks": Check(permit_mynetworks),
    "permit_sasl_authenticated": Check(permit_sasl_authenticated),
    "reject_unknown_client_hostname": _named(reject_unknown_client_hostname),
    "reject_unknown_client": _named(reject_unknown_client_hostname),
    "reject_unknown_reverse_client_hostname": _named(reject_unknown_reverse_client_hostname),
    "check_client_access": _named(check_client_access, _TABLE),
    "check_reverse_client_hostname_access": _named(check_reverse_client_hostname_access,
                                                   _TABLE),
    "reject_rbl_client": Check(reject_rbl_client, _DOMAIN, uses_dns=True),
    "permit_dnswl_client": Check(permit_dnswl_client, _DOMAIN, uses_dns=True),
    "reject_rhsbl_client": _named(_rhsbl(lambda s: s.facts.names.name, "Client host"), _DOMAIN),
    "reject_rhsbl_reverse_client": _named(
        _rhsbl(lambda s: s.facts.names.reverse_name, "Unverified Client host"), _DOMAIN),
    "permit_rhswl_client": _named(permit_rhswl_client, _DOMAIN),
    # HELO
    "check_helo_access": Check(check_helo_access, _TABLE),
    "reject_invalid_helo_hostname": Check(reject_invalid_helo_hostname),
    "reject_invalid_hostname": Check(reject_invalid_helo_hostname),
    "reject_non_fqdn_helo_hostname": Check(reject_non_fqdn_helo_hostname),
    "reject_non_fqdn_hostname": Check(reject_non_fqdn_helo_hostname),
    "reject_unknown_helo_hostname": Check(reject_unknown_helo_hostname, uses_dns=True),
    "reject_unknown_hostname": Check(reject_unknown_helo_hostname, uses_dns=True),
    "reject_rhsbl_helo": Check(_rhsbl(lambda s: s.facts.helo, "Helo command"), _DOMAIN,
                               uses_dns=True),
    # the sender
    "check_sender_access": Check(_address_access(SENDER), _TABLE),
    "reject_unknown_sender_domain": Check(_unknown_address_domain(SENDER), uses_dns=True),
    "reject_unknown_address": Check(_unknown_address_domain(SENDER), uses_dns=True),
    "reject_non_fqdn_sender": Check(_non_fqdn_address(SENDER)),
    "reject_unlisted_sender": Check(_unlisted_address(SENDER)),
    "reject_rhsbl_sender": Check(_rhsbl(lambda s: s.facts.sender, "Sender address"), _DOMAIN,
                                 uses_dns=True),
    **{name: Check(_sender_login(name)) for name in sorted(sender_login.RESTRICTIONS)},
    # the recipient
    "check_recipient_access": Check(_address_access(RECIPIENT), _TABLE),
    "permit_auth_destination": Check(permit_auth_destination),
    "reject_unauth_destination": Check(_unauth_destination(0, "5.7.1")),
    "defer_unauth_destination": Check(_unauth_destination(100, "4.7.1")),
    "reject_unknown_recipient_domain": Check(_unknown_address_domain(RECIPIENT),
                                             uses_dns=True),
    "reject_non_fqdn_recipient": Check(_non_fqdn_address(RECIPIENT)),
    "reject_unlisted_recipient": Check(_unlisted_address(RECIPIENT)),
    "check_recipient_maps": Check(_unlisted_address(RECIPIENT)),
    "reject_rhsbl_recipient": Check(_rhsbl(lambda s: s.facts.recipient, "Recipient address"),
                                    _DOMAIN, uses_dns=True),
    "reject_multi_recipient_bounce": Check(reject_multi_recipient_bounce),
}
