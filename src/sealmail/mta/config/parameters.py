"""Every main.cf parameter the MTA knows, declared once.

Declared in the shape of sealmail.config.schema, as the imapd.conf options are: `MAIN.<name>` is
the typed handle code reads with `MainConfig.get`, and the table is the single source for
`postconf -d`, docs/main-cf-parameters.md, the "unused parameter" warnings and the refusals
(sealmail.mta.config.checks). Each parameter's status says what sealmail does with it: `supported`
(honoured), `accepted` (read without effect, warned about when set) or `refused` (a security
control sealmail does not implement: setting it stops the start). Defaults are Postfix 3.7's
where we share the parameter, with two deliberate differences, both documented in docs/mta-config.md:

- paths are sealmail's (/etc/sealmail, /var/spool/sealmail, ...), not /etc/postfix;
- defaults that Postfix computes from `compatibility_level` are given their modern value
  (compatibility_level 3.6: no append_dot_mydomain, smtputf8 on, relay_domains empty, ...).

Three kinds of names are accepted besides the plain declared ones:

- per-transport parameters `<transport>_<suffix>` (cyrus_destination_recipient_limit) whose default
  is the matching `default_<suffix>` parameter, as Postfix's qmgr reads them;
- old names that Postfix renamed (lmtp_cache_connection -> lmtp_connection_cache_on_demand): the
  old name still sets the new parameter, and a note goes to the log (issue 8: the seed's lines
  must work verbatim);
- user-defined parameters referenced as `$name` from a known one (Postfix does the same).
"""

# One declaration per line reads best in a table; long doc strings are allowed here only.
# ruff: noqa: E501

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sealmail.config.options import refuse_listen_address
from sealmail.config.schema import (
    Kind,
    Option,
    Registry,
    Status,
    boolean,
    integer,
    maps,
    size,
    string,
    time,
    words,
)

log = logging.getLogger("sealmail.mta.config")

Parameter = Option  # a main.cf parameter is an Option of the shared schema
ACCEPTED, REFUSED = Status.ACCEPTED, Status.REFUSED


@dataclass(frozen=True, slots=True)
class Rename:
    """A parameter that Postfix renamed: the old name keeps working as the new one."""

    old: str
    new: str
    since: str  # the Postfix version that renamed it


# -- what sealmail can honour of the parameters it supports in part ------------------------------

# Postfix restrictions sealmail does not evaluate: naming one refuses the line, by name. (The
# ones it does are sealmail.mta.restrictions.checks.CHECKS; another word is a restriction class
# or a check's argument, and an unknown name refuses mail with 451 4.3.5 as Postfix does.)
UNIMPLEMENTED_RESTRICTIONS = frozenset({
    "reject_unverified_sender", "reject_unverified_recipient", "permit_mx_backup",
    "check_client_ns_access", "check_client_mx_access", "check_client_a_access",
    "check_reverse_client_ns_access", "check_reverse_client_mx_access",
    "check_reverse_client_a_access", "check_helo_ns_access", "check_helo_mx_access",
    "check_helo_a_access", "check_sender_ns_access", "check_sender_mx_access",
    "check_sender_a_access", "check_recipient_ns_access", "check_recipient_mx_access",
    "check_recipient_a_access", "check_ccert_access", "check_sasl_access",
    "permit_tls_clientcerts", "permit_tls_all_clientcerts", "check_etrn_access",
    "check_relay_domains", "permit_inet_interfaces", "sleep", "reject_maps_rbl",
    "permit_naked_ip_address",
})
SERVER_TLS_LEVELS = ("", "none", "may", "encrypt")
CLIENT_TLS_LEVELS = ("", "none", "may", "encrypt", "verify", "secure")


def refuse_unimplemented_restrictions(text: str) -> str | None:
    """A restriction list naming a Postfix check smtpd does not implement (reject_unverified_sender,
    ...), or a `{ ... }` group (per-check options, which sealmail does not read)."""
    from sealmail.mta.restrictions import implemented_restrictions

    words = text.replace(",", " ").split()
    implemented = implemented_restrictions()  # a CHECKS entry wins over the list above
    unknown = [w for w in words
               if w.lower() in UNIMPLEMENTED_RESTRICTIONS and w.lower() not in implemented]
    if "{" in text and not any(w.lower().startswith(("inline:{", "static:{", "texthash:{"))
                               for w in words):
        return "sealmail does not read per-restriction options in { ... }"
    if not unknown:
        return None
    return (f"sealmail does not implement {', '.join(unknown)} (implemented: "
            f"{', '.join(sorted(implemented))})")


def refuse_command_tables(text: str) -> str | None:
    """smtpd_forbidden_commands: names only (Postfix also takes patterns and tables there)."""
    tables = [w for w in text.replace(",", " ").split() if ":" in w or "{" in w]
    if tables:
        return f"sealmail takes command names here, not tables or patterns: {' '.join(tables)}"
    return None


def refuse_tempfail_action(text: str) -> str | None:
    action = text.strip().lower()
    if action in ("defer_if_permit", "defer", "$reject_tempfail_action"):
        return None
    return f"{action}: sealmail implements defer_if_permit and defer"


def refuse_server_tls_level(text: str) -> str | None:
    level = text.strip().lower()
    return None if level in SERVER_TLS_LEVELS else f"{level}: smtpd offers none, may or encrypt"


def refuse_client_tls_level(text: str) -> str | None:
    """dane, dane-only and fingerprint by name: sealmail's resolver does not validate DNSSEC."""
    level = text.strip().lower()
    if level in CLIENT_TLS_LEVELS:
        return None
    if level in ("dane", "dane-only", "fingerprint"):
        return (f"{level} is not implemented: sealmail's resolver does not validate DNSSEC, so "
                "it has no validated TLSA records (none, may, encrypt, verify and secure are)")
    return f"{level} is not a TLS security level (none, may, encrypt, verify or secure)"


def refuse_host_lookup(text: str) -> str | None:
    unknown = [w for w in text.replace(",", " ").split() if w.lower() not in ("dns", "native")]
    return f"{' '.join(unknown)}: the lookups are dns and native" if unknown else None


def refuse_address_preference(text: str) -> str | None:
    value = text.strip().lower()
    return None if value in ("any", "ipv4", "ipv6") else f"{value}: use ipv4, ipv6 or any"


# Postfix's mail_error_masks: the names notify_classes may hold.
NOTIFY_CLASSES = frozenset(
    {"bounce", "2bounce", "data", "delay", "policy", "protocol", "resource", "software"})


def refuse_notify_classes(text: str) -> str | None:
    """An unknown class name: Postfix stops with a fatal error too."""
    unknown = [w for w in text.replace(",", " ").split() if w.lower() not in NOTIFY_CLASSES]
    if not unknown:
        return None
    return f"unknown notify_classes value {', '.join(unknown)} (known: {', '.join(sorted(NOTIFY_CLASSES))})"


def refuse_hash_depth(text: str) -> str | None:
    """hash_queue_depth: Postfix's minimum is 1; sealmail's ids give 7 characters to hash on
    and readers look 8 levels down."""
    value = text.strip()
    if value.isdigit() and 1 <= int(value) <= 8:
        return None
    return f"{value}: the depth must be a number from 1 to 8"


def refuse_submit_restriction(text: str) -> str | None:
    """authorized_submit_users other than everyone: sendmail would not enforce it."""
    if text.replace(",", " ").split() in (["static:anyone"], ["static:all"]):
        return None
    return "sealmail's sendmail does not restrict who may post"


class MAIN(Registry):
    """Every main.cf parameter, as a typed handle: `config.get(MAIN.relayhost)`."""

    # Identity and layout
    config_directory = string("/etc/sealmail", "Directory of main.cf and master.cf.")
    queue_directory = string("/var/spool/sealmail", "Root of the mail queue (incoming, active, deferred, hold).")
    data_directory = string("/var/lib/sealmail/mta", "Directory of the MTA's caches and databases.")
    maillog_file = string("", "File the MTA logs to; empty means standard error / syslog.")
    maillog_file_prefixes = words("/var, /dev/stdout", "Allowed prefixes of maillog_file (Postfix's safety check).", status=ACCEPTED)
    mail_name = string("sealmail", "Name of the mail system in greetings and Received: headers.")
    mail_owner = string("postfix", "Account that owns the queue and that the MTA started as root runs as after binding its listeners (smtpd, qmgr, pickup, cleanup, the lmtp/smtp clients).")
    allow_root_services = boolean("no", "sealmail's own: let mail_owner be root (uid or gid 0); for tests and single-user set-ups only, logged loudly when used.")
    default_privs = string("nobody", "Account that local delivery to files and commands runs as by default.")
    compatibility_level = string("3.6", "Postfix compatibility level whose defaults we follow.", status=ACCEPTED)
    myhostname = string("", "Fully qualified name of this host (default: the system's FQDN).")
    mydomain = string("", "Domain of this host (default: myhostname minus its first label).")
    myorigin = string("$myhostname", "Domain appended to addresses posted locally without one.")
    mydestination = words("$myhostname, localhost.$mydomain, localhost", "Domains delivered by local_transport.")
    inet_interfaces = words("all", "Addresses the SMTP server listens on (all, loopback-only, list).")
    inet_protocols = words("all", "IP versions used: ipv4, ipv6 or all.", status=ACCEPTED)
    mynetworks = words("127.0.0.0/8 [::1]/128", "Trusted client networks (permit_mynetworks).")
    mynetworks_style = string("host", "How mynetworks is computed when unset: host, subnet or class.", status=ACCEPTED)
    append_dot_mydomain = boolean("no", "Append .$mydomain to addresses of the form user@host.", status=ACCEPTED)
    syslog_name = string("postfix", "Program name in log lines (postfix/smtpd[pid]): Postfix's, so that pflogsumm, fail2ban's postfix filter and log exporters read them unchanged; set another to tell two MTAs apart.")
    service_name = string("", "Name of the master.cf service the process runs as (set by master).")
    process_name = string("", "Name of the running program (set at start).", status=ACCEPTED)
    import_environment = words("MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C", "Environment variables that services inherit.", status=ACCEPTED)
    export_environment = words("TZ MAIL_CONFIG LANG", "Environment variables passed to external commands.")
    # Routing
    relayhost = string("", "Next hop for non-local mail: [host]:port as written, host or domain[:port] by its MX records; empty: the recipient domain's MX records.")
    relay_domains = words("", "Domains this MTA relays to (delivered with relay_transport).")
    relay_transport = string("relay", "Transport for relay_domains.")
    default_transport = string("smtp", "Transport for mail that matches no other class.")
    local_transport = string("local:$myhostname", "Transport for mydestination and inet_interfaces.")
    mailbox_transport = string("", "Transport the local agent hands mailbox delivery to (seed 2.1).")
    fallback_transport = string("", "Transport for local recipients without a UNIX account (seed 5.2).")
    virtual_transport = string("virtual", "Transport for virtual_mailbox_domains.")
    transport_maps = maps("", "Tables mapping recipients or domains to transport:nexthop.")
    virtual_alias_maps = maps("", "Tables rewriting recipients in cleanup (recursive).")
    virtual_alias_domains = words("$virtual_alias_maps", "Domains whose every address is an alias.")
    virtual_mailbox_domains = words("$virtual_mailbox_maps", "Domains delivered by virtual_transport.")
    virtual_mailbox_maps = maps("", "Valid recipients of virtual_mailbox_domains.")
    virtual_alias_recursion_limit = integer("1000", "Deepest nesting of virtual alias expansion.")
    virtual_alias_expansion_limit = integer("1000", "Most addresses one alias expansion may produce.")
    virtual_alias_address_length_limit = integer("1000", "Longest address an alias expansion may produce.")
    canonical_maps = maps("", "Tables rewriting sender and recipient addresses.", status=ACCEPTED)
    sender_canonical_maps = maps("", "Tables rewriting sender addresses.", status=ACCEPTED)
    recipient_canonical_maps = maps("", "Tables rewriting recipient addresses.", status=ACCEPTED)
    recipient_delimiter = string("", "Characters separating a user from an extension (user+ext).")
    propagate_unmatched_extensions = words("canonical, virtual", "Rewrites that keep an address extension the table did not match.")
    swap_bangpath = boolean("yes", "Rewrite site!user to user@site.", status=ACCEPTED)
    allow_percent_hack = boolean("yes", "Rewrite user%domain to user@domain.", status=ACCEPTED)
    parent_domain_matches_subdomains = words("debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,qmqpd_authorized_clients,relay_domains,smtpd_access_maps", "Features where a domain name also matches its subdomains.", status=ACCEPTED)
    # Local delivery (used by the next issue)
    alias_maps = maps("hash:/etc/aliases", "Alias tables read by the local agent.")
    alias_database = maps("hash:/etc/aliases", "Alias tables built by newaliases.")
    # Postfix's default is "proxy:unix:passwd.byname $alias_maps"; a sealed store's users are not
    # UNIX accounts, so sealmail starts empty (the LMTP server's 550 decides, as a bounce) and
    # `sealmail:/etc/sealmail/imapd.conf` asks the store at RCPT time.
    local_recipient_maps = maps("", "Valid local recipients (e.g. sealmail:IMAPD_CONF); empty accepts any local part.")
    home_mailbox = string("", "Mailbox file or maildir/ relative to the home directory.")
    mailbox_command = string("", "Command the local agent runs to deliver to a mailbox.")
    mailbox_size_limit = size("51200000", "Largest mailbox file the local agent appends to.")
    forward_path = words("$home/.forward${recipient_delimiter}${extension}, $home/.forward", ".forward files the local agent looks for.")
    allow_mail_to_commands = words("alias, forward", "Where |command destinations are allowed.")
    allow_mail_to_files = words("alias, forward", "Where /file destinations are allowed.")
    luser_relay = string("", "Destination for unknown local recipients.")
    owner_request_special = boolean("yes", "Treat owner-list and list-request addresses specially.")
    biff = boolean("yes", "Notify the comsat service of local deliveries.", status=ACCEPTED)
    mail_spool_directory = string("/var/mail", "Directory of the UNIX mbox files local(8) appends to.")
    deliver_lock_attempts = integer("20", "Attempts to lock a mailbox before delivery is deferred.")
    deliver_lock_delay = time("1s", "Time between attempts to lock a mailbox.")
    stale_lock_time = time("500s", "Age after which a mailbox dot-lock is removed as stale.")
    frozen_delivered_to = boolean("yes", "Keep the Delivered-To: address of local(8) the recipient it was given, through alias and .forward expansion.")
    # SMTP server
    smtpd_banner = string("$myhostname ESMTP $mail_name", "Text after 220 in the greeting.")
    smtpd_timeout = time("${stress?{10}:{300}}s", "Time the server waits for a client command or data.")
    smtpd_starttls_timeout = time("${stress?{10}:{300}}s", "Time allowed for the TLS handshake after 220 Ready to start TLS; a client that has not finished it is disconnected.")
    smtpd_recipient_limit = integer("1000", "Most recipients accepted in one transaction.")
    smtpd_hard_error_limit = integer("${stress?{1}:{20}}", "Errors after which the client is dropped with 421 4.7.0 Error: too many errors, at once after the error that reaches it. Every refused command counts (a rejected recipient too), as Postfix's smtpd.")
    smtpd_soft_error_limit = integer("10", "Errors after which each reply is delayed by smtpd_error_sleep_time.")
    smtpd_error_sleep_time = time("1s", "Delay before each reply once the client has made smtpd_soft_error_limit errors.")
    smtpd_junk_command_limit = integer("${stress?{1}:{100}}", "HELO, EHLO, NOOP, RSET and VRFY commands allowed before each one more counts as an error; a delivered message starts the count again.")
    smtpd_forbidden_commands = words("CONNECT GET POST", "Commands that end the session at once with 221 2.7.0 Error: I can break rules, too. Goodbye. (and a warning: non-SMTP command), as does a mail header sent as a command: an open proxy relaying to us, or a client lost in its DATA.", refuses=refuse_command_tables)
    smtpd_helo_required = boolean("no", "Require HELO or EHLO before MAIL.")
    smtpd_delay_reject = boolean("yes", "Apply client, helo and sender restrictions at RCPT time (no: at connect, HELO and MAIL).")
    smtpd_client_restrictions = words("", "Restrictions on the client address and name.", refuses=refuse_unimplemented_restrictions)
    smtpd_helo_restrictions = words("", "Restrictions on the HELO name.", refuses=refuse_unimplemented_restrictions)
    smtpd_sender_restrictions = words("", "Restrictions on the MAIL FROM address.", refuses=refuse_unimplemented_restrictions)
    smtpd_relay_restrictions = words("permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination", "Relay control applied at RCPT before smtpd_recipient_restrictions.", refuses=refuse_unimplemented_restrictions)
    smtpd_recipient_restrictions = words("", "Restrictions on each RCPT TO address.", refuses=refuse_unimplemented_restrictions)
    smtpd_data_restrictions = words("", "Restrictions applied at DATA (BDAT: with the last chunk, before the end-of-data restrictions).", refuses=refuse_unimplemented_restrictions)
    smtpd_restriction_classes = words("", "Names of user-defined restriction lists, usable in any restriction list and as an access table result.")
    smtpd_reject_unlisted_recipient = boolean("yes", "Reject a local domain's recipient that local_recipient_maps does not list (other address classes: not checked).")
    smtpd_end_of_data_restrictions = words("", "Restrictions applied after the message content.", refuses=refuse_unimplemented_restrictions)
    smtpd_reject_unlisted_sender = boolean("no", "Reject a local domain's sender that local_recipient_maps does not list.")
    smtpd_null_access_lookup_key = string("<>", "Key under which check_sender_access looks up the null sender.")
    reject_code = integer("554", "Reply code of the reject restriction.")
    defer_code = integer("450", "Reply code of the defer restriction.")
    relay_domains_reject_code = integer("554", "Reply code of reject_unauth_destination (defer_unauth_destination: 100 less).")
    access_map_reject_code = integer("554", "Reply code of an access table's REJECT.")
    access_map_defer_code = integer("450", "Reply code of an access table's DEFER, DEFER_IF_PERMIT and DEFER_IF_REJECT.")
    unknown_client_reject_code = integer("450", "Reply code of reject_unknown_client_hostname and reject_unknown_reverse_client_hostname.")
    unknown_hostname_reject_code = integer("450", "Reply code of reject_unknown_helo_hostname.")
    invalid_hostname_reject_code = integer("501", "Reply code of reject_invalid_helo_hostname.")
    non_fqdn_reject_code = integer("504", "Reply code of reject_non_fqdn_helo_hostname, _sender and _recipient.")
    unknown_address_reject_code = integer("450", "Reply code of reject_unknown_sender_domain and reject_unknown_recipient_domain.")
    unknown_local_recipient_reject_code = integer("550", "Reply code for a local recipient not in local_recipient_maps.")
    multi_recipient_bounce_reject_code = integer("550", "Reply code of reject_multi_recipient_bounce.")
    plaintext_reject_code = integer("450", "Reply code of reject_plaintext_session.")
    maps_rbl_reject_code = integer("554", "$rbl_code of reject_rbl_client and reject_rhsbl_*.")
    default_rbl_reply = string("$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}", "Reply template of a DNS block list refusal.")
    rbl_reply_maps = maps("", "Reply templates by DNS block list zone.")
    reject_tempfail_action = string("defer_if_permit", "What a temporary DNS failure in a check does: defer_if_permit or defer.", refuses=refuse_tempfail_action)
    unknown_helo_hostname_tempfail_action = string("$reject_tempfail_action", "reject_unknown_helo_hostname's action when the DNS fails.", refuses=refuse_tempfail_action)
    unknown_address_tempfail_action = string("$reject_tempfail_action", "reject_unknown_sender_domain's and _recipient_domain's action when the DNS fails.", refuses=refuse_tempfail_action)
    smtpd_policy_service_timeout = time("100s", "Time a policy server has to answer one check_policy_service request.")
    smtpd_policy_service_max_idle = time("300s", "Idle time after which the connection to a policy server is closed.")
    smtpd_policy_service_max_ttl = time("1000s", "Age after which the connection to a policy server is reopened.")
    smtpd_policy_service_try_limit = integer("2", "Attempts of a policy request before the default action applies.")
    smtpd_policy_service_retry_delay = time("1s", "Delay between attempts of a policy request.")
    smtpd_policy_service_request_limit = integer("0", "Requests per connection to a policy server (0: no limit).")
    smtpd_policy_service_default_action = string("451 4.3.5 Server configuration problem", "Action when a policy server cannot be asked (an access table action).")
    smtpd_policy_service_policy_context = string("", "policy_context attribute sent to policy servers.")
    unverified_recipient_reject_code = integer("450", "Reply code of reject_unverified_recipient (not implemented: that restriction is refused).", status=ACCEPTED)
    unverified_sender_reject_code = integer("450", "Reply code of reject_unverified_sender (not implemented: that restriction is refused).", status=ACCEPTED)
    unverified_recipient_defer_code = integer("450", "reject_unverified_recipient's code when the probe is pending (not implemented).", status=ACCEPTED)
    unverified_sender_defer_code = integer("450", "reject_unverified_sender's code when the probe is pending (not implemented).", status=ACCEPTED)
    unverified_recipient_reject_reason = string("", "reject_unverified_recipient's text (not implemented).", status=ACCEPTED)
    unverified_sender_reject_reason = string("", "reject_unverified_sender's text (not implemented).", status=ACCEPTED)
    permit_mx_backup_networks = words("", "Networks whose MX hosts permit_mx_backup trusts (not implemented: that restriction is refused).", status=ACCEPTED)
    smtpd_log_access_permit_actions = words("", "Permit actions to log (sealmail logs none).", status=ACCEPTED)
    policy_time_limit = time("1000s", "Time limit of a policy server run by master.cf's spawn (sealmail's master does not spawn policy servers).", status=ACCEPTED)
    smtpd_client_connection_count_limit = integer("50", "Simultaneous connections per client and service, counted across all smtpd processes by the master's anvil (421 4.7.0 Error: too many connections from ADDR); 0: no limit.")
    smtpd_client_connection_rate_limit = integer("0", "Connections per client and service in anvil_rate_time_unit (421 4.7.0); 0: no limit.")
    smtpd_client_message_rate_limit = integer("0", "MAIL commands per client and service in anvil_rate_time_unit (450 4.7.1 Error: too much mail from ADDR); 0: no limit.")
    smtpd_client_recipient_rate_limit = integer("0", "RCPT commands per client and service in anvil_rate_time_unit (450 4.7.1 Error: too many recipients from ADDR); 0: no limit.")
    smtpd_client_new_tls_session_rate_limit = integer("0", "New TLS sessions per client and service in anvil_rate_time_unit: the session that goes over it gets 421 4.7.0 HOST Error: too many new TLS sessions from NAME[ADDR] after its handshake (warning: New TLS session rate limit exceeded), and once over it STARTTLS gets 454 4.7.0 Error: too many new TLS sessions from NAME[ADDR] (warning: Refusing STARTTLS request), and with smtpd_tls_wrappermode the connection is closed before the handshake (warning: Refusing TLS service request), as Postfix; 0: no limit.")
    smtpd_client_auth_rate_limit = integer("0", "AUTH commands per client and service in anvil_rate_time_unit (450 4.7.1 Error: too many AUTH commands from ADDR); 0: no limit.")
    smtpd_client_event_limit_exceptions = words("$mynetworks", "Clients exempt from the connection and rate limits (network addresses, as mynetworks).")
    anvil_rate_time_unit = time("60s", "The window over which anvil counts connection, message, recipient, TLS and AUTH rates.")
    anvil_status_update_time = time("600s", "How often anvil logs its statistics (the largest connection count and rates, and by which client) when there were any, as anvil(8) does.")
    smtpd_authorized_verp_clients = words("", "Clients allowed to use XVERP.", status=ACCEPTED)
    smtpd_discard_ehlo_keywords = words("", "EHLO keywords not announced (and not honoured).", status=ACCEPTED)
    smtpd_sasl_auth_enable = boolean("no", "Offer AUTH to clients.")
    smtpd_sender_login_maps = maps("", "Owners of envelope senders: address (or address without +extension, local part of a local domain, @domain) -> SASL logins, for the reject_*_sender_login_mismatch restrictions.")
    smtpd_sasl_type = string("sealmail", "SASL implementation the server uses (sealmail's sasldb).", status=ACCEPTED)
    smtpd_sasl_path = string("smtpd", "SASL application name or socket path.", status=ACCEPTED)
    smtpd_sasl_imapd_conf = string("/etc/imapd.conf", "The store's imapd.conf whose sasl_* settings (sasldb, saslauthd, mechanisms) smtpd AUTH uses.")
    smtpd_sasl_security_options = words("noanonymous", "Mechanism properties required without TLS.")
    smtpd_sasl_tls_security_options = words("$smtpd_sasl_security_options", "Mechanism properties required under TLS.")
    smtpd_sasl_local_domain = string("", "Realm appended to login names without one.", status=ACCEPTED)
    smtpd_sasl_authenticated_header = boolean("no", "Name the login in the Received: header.")
    smtpd_tls_security_level = string("", "TLS offer of the server: none, may or encrypt.", refuses=refuse_server_tls_level)
    smtpd_tls_cert_file = string("", "PEM certificate chain of the server.")
    smtpd_tls_key_file = string("$smtpd_tls_cert_file", "PEM private key of the server.")
    smtpd_tls_chain_files = words("", "PEM files, each a private key followed by its certificate chain (one per key type); when set, smtpd_tls_cert_file and smtpd_tls_key_file are ignored.")
    smtpd_tls_CAfile = string("", "CA certificates for client certificates.", status=ACCEPTED)
    smtpd_tls_auth_only = boolean("no", "Offer AUTH only after STARTTLS.")
    smtpd_tls_wrappermode = boolean("no", "Implicit TLS: the handshake comes first, before the 220 greeting (the submissions service on port 465, RFC 8314); needs a certificate.")
    smtpd_tls_loglevel = integer("0", "Detail of TLS logging.", status=ACCEPTED)
    smtpd_tls_received_header = boolean("no", "Note the TLS protocol and cipher in Received:.", status=ACCEPTED)
    # sealmail's floor is TLS 1.2 (RFC 8996 deprecates 1.0 and 1.1), Postfix's is >=TLSv1.
    smtpd_tls_protocols = words(">=TLSv1.2", "TLS versions offered at security level may (>=TLSv1.2, <=TLSv1.3, !TLSv1.1 or a list of names); they must form a range.")
    smtpd_tls_mandatory_protocols = words(">=TLSv1.2", "TLS versions offered at security level encrypt (same syntax as smtpd_tls_protocols).")
    smtpd_tls_ciphers = string("medium", "Cipher grade at security level may; sealmail always offers Python's default list, stronger than Postfix's medium and high.", status=ACCEPTED)
    smtpd_tls_mandatory_ciphers = string("medium", "Cipher grade at security level encrypt; as smtpd_tls_ciphers.", status=ACCEPTED)
    smtpd_peername_lookup = boolean("yes", "Look up the client's name (PTR, verified by its A/AAAA records, through sealmail_resolv_conf's servers) when a restriction reads it; no: every client is unknown.")
    smtpd_forbid_bare_newline = string("no", "Reject bare LF in SMTP commands and data.", status=ACCEPTED)
    smtpd_proxy_filter = string("", "Before-queue content filter (not supported).", status=REFUSED)
    smtpd_milters = words("", "Milter applications (Sendmail milter protocol) for mail received by smtpd, in order: inet:host:port or unix:/path; called at connect, HELO, MAIL, RCPT, DATA and end of message, their header edits and body replacement written to the queue before the 250 (sealmail.mta.milter).")
    non_smtpd_milters = words("", "Milter applications for mail that does not arrive by smtpd: sendmail/pickup postings (the client is localhost[127.0.0.1]); their edits are written before the message is queued.")
    smtpd_milter_maps = maps("", "Milter lists per client address (not supported).", status=REFUSED)
    milter_default_action = string("tempfail", "What a milter that cannot be reached, times out or breaks the protocol means: tempfail (451 4.7.1), accept (as if it were not there), reject (550 5.5.0), quarantine (accept into the hold queue) or shutdown (421, the session ends).")
    milter_protocol = string("6", "Milter protocol version offered (2, 3, 4 or 6), optionally with no_header_reply.")
    milter_connect_timeout = time("30s", "Time limit for connecting to a milter and negotiating.")
    milter_command_timeout = time("30s", "Time limit for a milter's answer to a command (connect, HELO, MAIL, RCPT, DATA).")
    milter_content_timeout = time("300s", "Time limit for a milter's answer to message content (headers, body, end of message).")
    milter_connect_macros = words("j {daemon_name} {daemon_addr} v _", "Macros sent to milters with the connect event.")
    milter_helo_macros = words("{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}", "Macros sent with HELO/EHLO.")
    milter_mail_macros = words("i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}", "Macros sent with MAIL FROM.")
    milter_rcpt_macros = words("i {rcpt_addr} {rcpt_host} {rcpt_mailer}", "Macros sent with RCPT TO.")
    milter_data_macros = words("i", "Macros sent with DATA.")
    milter_unknown_command_macros = words("", "Macros sent with an unknown command (sealmail sends milters no unknown commands).")
    milter_end_of_header_macros = words("i", "Macros sent at the end of the headers.")
    milter_end_of_data_macros = words("i", "Macros sent at the end of the message.")
    milter_macro_daemon_name = string("$myhostname", "The {daemon_name} macro.")
    milter_macro_v = string("$mail_name", "The {v} macro.")
    milter_macro_defaults = words("", "Macro values (name=value) sent when sealmail has none.")
    milter_header_checks = maps("", "header_checks for headers that milters add (not supported).", status=REFUSED)
    smtputf8_enable = boolean("yes", "Offer SMTPUTF8 (RFC 6531) in smtpd, where a UTF-8 envelope address then needs MAIL's SMTPUTF8 parameter (553 5.6.7, Postfix's strict_smtputf8); the declaration is kept with the message and passed on only to servers that offer SMTPUTF8 (else 5.6.7 bounces).")
    strict_rfc821_envelopes = boolean("no", "Require <> around MAIL and RCPT addresses.", status=ACCEPTED)
    disable_vrfy_command = boolean("no", "Refuse VRFY.", status=ACCEPTED)
    message_size_limit = size("10240000", "Largest message accepted, in bytes (SIZE, RFC 1870).")
    queue_minfree = size("0", "Free bytes the queue's file system keeps: MAIL FROM is answered 452 4.3.1 when less than this plus 1.5 times the message's SIZE is free (or nothing is).")
    header_size_limit = size("102400", "Most bytes of one header kept by cleanup.", status=ACCEPTED)
    line_length_limit = integer("2048", "Longest line of a message stored as one record.", status=ACCEPTED)
    hopcount_limit = integer("50", "Most Received: headers before a message is bounced as a loop.")
    mime_nesting_limit = integer("100", "Deepest MIME nesting inspected.", status=ACCEPTED)
    in_flow_delay = time("1s", "Delay of each posting while the queue manager falls behind.", status=ACCEPTED)
    content_filter = string("", "After-queue content filter transport (not supported).", status=REFUSED)
    receive_override_options = words("", "Cleanup features to switch off for this service.", status=ACCEPTED)
    always_bcc = string("", "Address that receives a copy of every message.", status=ACCEPTED)
    authorized_submit_users = maps("static:anyone", "Users allowed to post with sendmail.", status=ACCEPTED, refuses=refuse_submit_restriction)
    # Queue manager
    queue_run_delay = time("300s", "Time between scans of the deferred queue.")
    minimal_backoff_time = time("300s", "Least time a deferred message waits before a retry.")
    maximal_backoff_time = time("4000s", "Most time a deferred message waits before a retry.")
    maximal_queue_lifetime = time("5d", "Time after which an undeliverable message bounces.", time_unit='d')
    bounce_queue_lifetime = time("5d", "maximal_queue_lifetime for bounces.", time_unit='d')
    delay_warning_time = time("0h", "Time after which the sender gets one delay notice (RFC 3464 Action: delayed) while mail waits (0: never).", time_unit='h')
    transport_retry_time = time("60s", "Time between attempts to contact a failing transport.", status=ACCEPTED)
    qmgr_message_active_limit = integer("20000", "Most messages in the active queue.")
    qmgr_message_recipient_limit = integer("20000", "Most recipients in memory in the queue manager.", status=ACCEPTED)
    initial_destination_concurrency = integer("5", "Deliveries to a destination in parallel at first (slow start: one more per delivery that does not fail at the destination).")
    default_destination_concurrency_limit = integer("20", "Most parallel deliveries per destination (0: no limit).")
    default_destination_recipient_limit = integer("50", "Recipients per delivery (seed section 6).")
    default_destination_rate_delay = time("0s", "Pause between deliveries to one destination.", status=ACCEPTED)
    default_destination_concurrency_failed_cohort_limit = integer("1", "Failed pseudo-cohorts (a failure counts 1/window) after which a destination is dead: its mail waits minimal_backoff_time (\"delivery temporarily suspended\"); 0: never.")
    default_recipient_limit = integer("20000", "Recipients in memory per transport.", status=ACCEPTED)
    default_extra_recipient_limit = integer("1000", "Extra recipients read ahead per transport.", status=ACCEPTED)
    default_delivery_slot_cost = integer("5", "Preemption cost of a delivery slot.", status=ACCEPTED)
    default_minimum_delivery_slots = integer("3", "Slots a message needs before it can preempt.", status=ACCEPTED)
    default_recipient_refill_limit = integer("100", "Recipients added per refill of a job.", status=ACCEPTED)
    default_recipient_refill_delay = time("5s", "Wait before a job's recipients are refilled.", status=ACCEPTED)
    default_delivery_slot_discount = integer("50", "Percent discount of a slot's cost (preemption).", status=ACCEPTED)
    default_delivery_slot_loan = integer("3", "Slots a job may borrow before preemption.", status=ACCEPTED)
    default_destination_concurrency_negative_feedback = string("1", "Concurrency decrease after a failed delivery (sealmail: always 1).", status=ACCEPTED)
    default_destination_concurrency_positive_feedback = string("1", "Concurrency increase after a good delivery (sealmail: always 1).", status=ACCEPTED)
    default_transport_rate_delay = time("0s", "Pause between deliveries through one transport.", status=ACCEPTED)
    local_destination_concurrency_limit = integer("2", "Parallel deliveries per local recipient.")
    local_destination_recipient_limit = integer("1", "Recipients per local delivery (one: .forward).")
    defer_transports = words("", "Transports whose mail waits until `postqueue -f`.")
    hash_queue_names = words("deferred, defer", "Queues whose files live in one-character subdirectories (incoming, active, deferred, hold, corrupt; Postfix's log queues defer, bounce, trace and flush are kept inside sealmail's queue files). Readers find files under any layout; `postsuper -s`, run at start, moves them.")
    hash_queue_depth = integer("1", "Levels of subdirectories of a hashed queue (1 to 8).", refuses=refuse_hash_depth)
    enable_long_queue_ids = boolean("no", "Use long, time-ordered queue ids.", status=ACCEPTED)
    soft_bounce = boolean("no", "Turn every permanent failure into a deferral (testing aid).")
    notify_classes = words("resource, software", "Problems reported to the postmaster: bounce, 2bounce, delay (copies of notices), resource, software, policy, protocol (smtpd session transcripts), data (none in sealmail).", refuses=refuse_notify_classes)
    bounce_notice_recipient = string("postmaster", "Recipient of the postmaster's copies of bounces (notify_classes bounce).")
    delay_notice_recipient = string("postmaster", "Recipient of the postmaster's copies of delay notices (notify_classes delay).")
    error_notice_recipient = string("postmaster", "Recipient of smtpd's error transcripts (notify_classes resource, software, policy, protocol).")
    bounce_size_limit = size("50000", "Most bytes of the original message returned in a bounce.")
    empty_address_recipient = string("MAILER-DAEMON", "Recipient of mail addressed to <>.", status=ACCEPTED)
    double_bounce_sender = string("double-bounce", "Sender of postmaster notices; mail to it is discarded, so they never loop.")
    delay_logging_resolution_limit = integer("2", "Decimals in delay= and delays= log fields.", status=ACCEPTED)
    duplicate_filter_limit = integer("1000", "Recipients remembered to drop duplicates.", status=ACCEPTED)
    command_time_limit = time("1000s", "Time limit of an external delivery command.")
    # Processes (master)
    default_process_limit = integer("100", "Process limit of a master.cf service whose maxproc is '-'.")
    max_idle = time("100s", "Time an idle service process waits for work before it exits.", status=ACCEPTED)
    max_use = integer("100", "Requests a service process handles before it exits.", status=ACCEPTED)
    ipc_timeout = time("3600s", "Time limit of an internal request.", status=ACCEPTED)
    daemon_timeout = time("18000s", "Time limit of a service process's request.", status=ACCEPTED)
    service_throttle_time = time("60s", "Wait before a failing service is restarted.", status=ACCEPTED)
    # Lookup tables
    default_database_type = string("hash", "Table type when a table is named without one (postmap).")
    # SMTP and LMTP clients (one client core, as in Postfix >= 2.3)
    smtp_fallback_relay = words("", "Hosts tried when the next hop fails.", status=ACCEPTED)
    smtp_helo_name = string("$myhostname", "Name sent in HELO/EHLO.")
    smtp_bind_address = string("", "Local address of outgoing SMTP connections.", status=ACCEPTED)
    smtp_tcp_port = string("smtp", "Port (number or services name) of a next hop written without one.")
    smtp_host_lookup = words("dns", "How server addresses are found: dns (MX, A and AAAA records), native (the system's resolver: /etc/hosts, nsswitch; no MX lookups), or dns, native (the system's when DNS finds nothing).", refuses=refuse_host_lookup)
    smtp_address_preference = string("any", "Address family tried first among servers of one MX preference: ipv4, ipv6 or any.", refuses=refuse_address_preference)
    smtp_randomize_addresses = boolean("yes", "Shuffle the servers of one MX preference (RFC 5321 5.1).")
    smtp_mx_address_limit = integer("5", "Most server addresses tried per delivery (0: no limit).")
    smtp_mx_session_limit = integer("2", "Most sessions past the handshake per delivery, before the mail waits (0: no limit).")
    sealmail_mta_sts = boolean("no", "sealmail's own: apply MTA-STS (RFC 8461) policies to mail the smtp client sends to a domain's MX hosts: discovered by the _mta-sts TXT record, fetched over HTTPS and cached for max_age; enforce admits only the policy's MX hosts and requires TLS that verifies for their names (trust from smtp_tls_CAfile). Postfix sites use postfix-mta-sts-resolver through smtp_tls_policy_maps instead.")
    sealmail_mta_sts_CAfile = string("", "sealmail's own: CA certificates that verify MTA-STS policy hosts (https://mta-sts.DOMAIN); empty: the system's.")
    sealmail_mta_sts_hosts = words("", "sealmail's own, for tests: policy hosts fetched from another address, as HOST=ADDRESS:PORT words (mta-sts.example.com=127.0.0.1:8443); the certificate is still checked for HOST.")
    sealmail_mta_sts_timeout = time("30s", "sealmail's own: time allowed to fetch one MTA-STS policy.")
    sealmail_resolv_conf = string("/etc/resolv.conf", "sealmail's own: the resolv.conf whose name servers the SMTP client asks (Postfix always uses the system's); tests point it at their own DNS server.")
    smtp_connect_timeout = time("30s", "Time allowed to connect.")
    smtp_helo_timeout = time("300s", "Time allowed for the greeting and EHLO reply.")
    smtp_mail_timeout = time("300s", "Time allowed for the MAIL reply.")
    smtp_rcpt_timeout = time("300s", "Time allowed for each RCPT reply.")
    smtp_data_init_timeout = time("120s", "Time allowed for the DATA reply.")
    smtp_data_xfer_timeout = time("180s", "Time allowed for each chunk of message content.")
    smtp_data_done_timeout = time("600s", "Time allowed for the reply after the final dot.")
    smtp_rset_timeout = time("20s", "Time allowed for the RSET reply.")
    smtp_quit_timeout = time("300s", "Time allowed for the QUIT reply.")
    smtp_starttls_timeout = time("300s", "Time allowed for the TLS handshake.")
    smtp_skip_quit_response = boolean("yes", "Close without waiting for the QUIT reply.")
    smtp_connection_cache_on_demand = boolean("yes", "Keep connections open while a destination has mail.")
    smtp_connection_cache_destinations = words("", "Destinations whose connections are always cached.")
    smtp_connection_cache_time_limit = time("2s", "Time an idle cached connection is kept.")
    smtp_connection_reuse_time_limit = time("300s", "Time a connection may be reused for.")
    smtp_sasl_auth_enable = boolean("no", "Authenticate to the server.")
    smtp_sasl_password_maps = maps("", "Tables of user:password by next hop.")
    smtp_sasl_security_options = words("noplaintext, noanonymous", "Mechanism properties required.")
    smtp_sasl_mechanism_filter = words("", "Mechanisms the client may choose from.")
    smtp_tls_security_level = string("", "TLS policy: none, may, encrypt, verify or secure (dane is refused: no DNSSEC validation).", refuses=refuse_client_tls_level)
    smtp_tls_policy_maps = maps("", "Per-destination TLS policy: next hop (or .parent domain) -> level [match=a:b] [protocols=...] [servername=...].")
    smtp_tls_CAfile = string("", "CA certificates that verify the server.")
    smtp_tls_CApath = string("", "Directory of hashed CA certificates that verify the server.")
    smtp_tls_protocols = words(">=TLSv1", "TLS versions allowed at level may (>=TLSv1.2, !SSLv3, TLSv1.2 TLSv1.3, ...).")
    smtp_tls_mandatory_protocols = words(">=TLSv1", "TLS versions allowed at levels encrypt, verify and secure.")
    smtp_tls_verify_cert_match = words("hostname", "Names a server certificate must match at level verify: hostname, nexthop, dot-nexthop, a name or .domain.")
    smtp_tls_secure_cert_match = words("nexthop, dot-nexthop", "Names a server certificate must match at level secure.")
    smtp_tls_servername = string("", "SNI name sent: empty (none), hostname, nexthop or a name.")
    smtp_tls_cert_file = string("", "Client certificate.")
    smtp_tls_key_file = string("$smtp_tls_cert_file", "Client key.")
    smtp_tls_loglevel = integer("0", "TLS logging: 1 or more logs a 'TLS connection established' line per handshake (certificate failures that stop a delivery are logged at 0 too).")
    tls_append_default_CA = boolean("no", "Trust the system's CA certificates too, besides *_tls_CAfile and *_tls_CApath.")
    lmtp_lhlo_name = string("$myhostname", "Name sent in LHLO.")
    lmtp_bind_address = string("", "Local address of outgoing LMTP connections over TCP.", status=ACCEPTED)
    lmtp_tcp_port = string("24", "Port of an inet: next hop without one (Postfix < 2.3; lmtp service).", status=ACCEPTED)
    lmtp_connect_timeout = time("0s", "Time allowed to connect (0: the system's limit).")
    lmtp_lhlo_timeout = time("300s", "Time allowed for the greeting and LHLO reply.")
    lmtp_mail_timeout = time("300s", "Time allowed for the MAIL reply.")
    lmtp_rcpt_timeout = time("300s", "Time allowed for each RCPT reply.")
    lmtp_data_init_timeout = time("120s", "Time allowed for the DATA reply.")
    lmtp_data_xfer_timeout = time("180s", "Time allowed for each chunk of message content.")
    lmtp_data_done_timeout = time("600s", "Time allowed for each recipient's reply after the dot.")
    lmtp_rset_timeout = time("20s", "Time allowed for the RSET reply.")
    lmtp_quit_timeout = time("300s", "Time allowed for the QUIT reply.")
    lmtp_starttls_timeout = time("300s", "Time allowed for the TLS handshake.")
    lmtp_skip_quit_response = boolean("no", "Close without waiting for the QUIT reply.")
    lmtp_connection_cache_on_demand = boolean("yes", "Keep sessions open (reused with RSET) while a destination has mail.")
    lmtp_connection_cache_destinations = words("", "Destinations whose sessions are always cached.")
    lmtp_connection_cache_time_limit = time("2s", "Time an idle cached session is kept.")
    lmtp_connection_reuse_time_limit = time("300s", "Time a session may be reused for.")
    lmtp_sasl_auth_enable = boolean("no", "Authenticate to the LMTP server (seed 9.1 cyrus-inet).")
    lmtp_sasl_password_maps = maps("", "Tables of user:password by next-hop host (seed 2.2.1.2).")
    lmtp_sasl_security_options = words("noplaintext, noanonymous", "Mechanism properties required.")
    lmtp_sasl_mechanism_filter = words("", "Mechanisms the client may choose from.")
    lmtp_tls_security_level = string("", "TLS policy: none, may, encrypt, verify or secure.", refuses=refuse_client_tls_level)
    lmtp_tls_policy_maps = maps("", "Per-destination TLS policy of the LMTP client (as smtp_tls_policy_maps).")
    lmtp_tls_CAfile = string("", "CA certificates that verify the server.")
    lmtp_tls_CApath = string("", "Directory of hashed CA certificates that verify the server.")
    lmtp_tls_protocols = words(">=TLSv1", "TLS versions allowed at level may.")
    lmtp_tls_mandatory_protocols = words(">=TLSv1", "TLS versions allowed at levels encrypt, verify and secure.")
    lmtp_tls_verify_cert_match = words("hostname", "Names a server certificate must match at level verify.")
    lmtp_tls_secure_cert_match = words("nexthop", "Names a server certificate must match at level secure.")
    lmtp_tls_servername = string("", "SNI name sent: empty (none), hostname, nexthop or a name.")
    lmtp_tls_cert_file = string("", "Client certificate.")
    lmtp_tls_key_file = string("$lmtp_tls_cert_file", "Client key.")
    lmtp_tls_loglevel = integer("0", "TLS logging, as smtp_tls_loglevel.")
    # Tools
    metrics_listen = string("", "sealmail's own: ADDR:PORT where the MTA's master serves Prometheus metrics (/metrics: postfix_exporter's names, the queue by age and size), summed over its smtpd processes; needs the `metrics` extra (prometheus-client). Empty: none.", refuses=refuse_listen_address)
    sendmail_path = string("/usr/sbin/sendmail", "Path of the sendmail command.", status=ACCEPTED)
    mailq_path = string("/usr/bin/mailq", "Path of the mailq command.", status=ACCEPTED)
    newaliases_path = string("/usr/bin/newaliases", "Path of the newaliases command.", status=ACCEPTED)
    # Declared only so that setting them is refused rather than an "unused parameter" warning:
    # each is a control whose absence would weaken what the operator asked for.
    header_checks = maps("", "Header inspection tables of cleanup (not supported).", status=REFUSED)
    body_checks = maps("", "Body inspection tables of cleanup (not supported).", status=REFUSED)


# A name Python cannot spell as an attribute: declared beside the class, and its typed handle
# kept here (`config.get(TWO_BOUNCE_NOTICE_RECIPIENT)`).
TWO_BOUNCE_NOTICE_RECIPIENT: Option[str] = string(
    "postmaster", "Recipient of double bounces: bounces that could not be delivered "
    "(notify_classes 2bounce or bounce).").named("2bounce_notice_recipient")
setattr(MAIN, TWO_BOUNCE_NOTICE_RECIPIENT.name, TWO_BOUNCE_NOTICE_RECIPIENT)

PARAMETERS: dict[str, Parameter[Any]] = MAIN.options()

# Names Postfix renamed. Postfix keeps most old names alive through the new name's default
# (virtual_alias_maps = $virtual_maps); we keep them all alive the same way for every name here: an
# unset new parameter takes the old one's value, with a note in the log. The list is the one
# Postfix 3.7's own defaults still honour, plus lmtp_cache_connection, which Postfix dropped in the
# 2.3 SMTP+LMTP merge and CYRUS_README 9.1 still uses.
RENAMES: dict[str, Rename] = {
    r.old: r
    for r in (
        Rename("lmtp_cache_connection", "lmtp_connection_cache_on_demand", "2.3"),
        Rename("virtual_maps", "virtual_alias_maps", "2.0"),
        Rename("authorized_verp_clients", "smtpd_authorized_verp_clients", "2.1"),
        Rename(
            "smtpd_client_connection_limit_exceptions", "smtpd_client_event_limit_exceptions", "2.2"
        ),
        Rename("fallback_relay", "smtp_fallback_relay", "2.3"),
        Rename("smtpd_sasl_application_name", "smtpd_sasl_path", "2.3"),
        Rename("postscreen_dnsbl_ttl", "postscreen_dnsbl_max_ttl", "3.1"),
        Rename("postscreen_blacklist_action", "postscreen_denylist_action", "3.6"),
        Rename("postscreen_whitelist_interfaces", "postscreen_allowlist_interfaces", "3.6"),
        Rename(
            "postscreen_dnsbl_whitelist_threshold", "postscreen_dnsbl_allowlist_threshold", "3.6"
        ),
        Rename("tlsproxy_client_level", "tlsproxy_client_security_level", "3.4"),
        Rename("tlsproxy_client_policy", "tlsproxy_client_policy_maps", "3.4"),
    )
}

# Per-transport parameters: <transport><suffix>, defaulting to $default<suffix> (or the named
# parameter). qmgr(8) reads these for each transport that master.cf defines.
S, N, T = Kind.STRING, Kind.INTEGER, Kind.TIME
PER_TRANSPORT: dict[str, tuple[Kind, str, str]] = {
    "_destination_recipient_limit": (
        N,
        "$default_destination_recipient_limit",
        "Recipients per delivery through this transport.",
    ),
    "_destination_concurrency_limit": (
        N,
        "$default_destination_concurrency_limit",
        "Parallel deliveries per destination through this transport.",
    ),
    "_initial_destination_concurrency": (
        N,
        "$initial_destination_concurrency",
        "Initial parallel deliveries per destination.",
    ),
    "_destination_rate_delay": (
        T,
        "$default_destination_rate_delay",
        "Pause between deliveries to one destination.",
    ),
    "_destination_concurrency_failed_cohort_limit": (
        N,
        "$default_destination_concurrency_failed_cohort_limit",
        "Failed pseudo-cohorts after which a destination is throttled.",
    ),
    "_recipient_limit": (N, "$default_recipient_limit", "Recipients in memory for this transport."),
    "_extra_recipient_limit": (N, "$default_extra_recipient_limit", "Recipients read ahead."),
    "_delivery_slot_cost": (
        N,
        "$default_delivery_slot_cost",
        "Preemption cost of a delivery slot.",
    ),
    "_minimum_delivery_slots": (N, "$default_minimum_delivery_slots", "Slots needed to preempt."),
    "_recipient_refill_limit": (N, "$default_recipient_refill_limit", "Recipients per refill."),
    "_recipient_refill_delay": (T, "$default_recipient_refill_delay", "Wait before a refill."),
    "_time_limit": (T, "$command_time_limit", "Time limit of one delivery through this transport."),
    "_delivery_slot_discount": (
        N,
        "$default_delivery_slot_discount",
        "Slot discount (qmgr preemption).",
    ),
    "_delivery_slot_loan": (N, "$default_delivery_slot_loan", "Slot loan (qmgr preemption)."),
    "_destination_concurrency_negative_feedback": (
        S,
        "$default_destination_concurrency_negative_feedback",
        "Concurrency decrease on failure.",
    ),
    "_destination_concurrency_positive_feedback": (
        S,
        "$default_destination_concurrency_positive_feedback",
        "Concurrency increase on success.",
    ),
    "_transport_rate_delay": (T, "$default_transport_rate_delay", "Pause between deliveries."),
}

# The per-transport parameters sealmail reads (qmgr's recipient batches and concurrency
# scheduler, pipe's time limit); the others are accepted without effect, as their `default_`
# parameters are.
PER_TRANSPORT_HONOURED = frozenset({
    "_destination_recipient_limit", "_time_limit", "_destination_concurrency_limit",
    "_initial_destination_concurrency", "_destination_concurrency_failed_cohort_limit"})

# Delivery agents whose master.cf services get per-transport parameters (as Postfix's postconf).
DELIVERY_AGENTS = frozenset({"lmtp", "smtp", "local", "virtual", "pipe", "error", "discard"})

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


def is_valid_name(name: str) -> bool:
    """A main.cf parameter name: letters, digits, '_', and '-' or '.' as in transport names."""
    return bool(_NAME.match(name))


def per_transport(name: str, transports: Iterable[str] | None = None) -> Parameter[Any] | None:
    """The declaration of `<transport><suffix>`, or None.

    With `transports`, only those transport names count (postconf's "unused parameter" check);
    without, any prefix does (a delivery agent asking for its own limit).
    """
    allowed = None if transports is None else set(transports)
    # Longest suffix first: cyrus_destination_recipient_limit is cyrus + _destination_recipient_
    # limit, not "cyrus_destination" + _recipient_limit.
    for suffix in sorted(PER_TRANSPORT, key=len, reverse=True):
        transport = name.removesuffix(suffix)
        if transport == name or not transport or transport.startswith("_"):
            continue
        if allowed is not None and transport not in allowed:
            continue
        kind, default, doc = PER_TRANSPORT[suffix]
        status = Status.SUPPORTED if suffix in PER_TRANSPORT_HONOURED else ACCEPTED
        return Option(kind, default, doc, status, name=name)
    return None


def _of_transport(transport: str, suffix: str) -> Parameter[Any]:
    kind, default, doc = PER_TRANSPORT[suffix]
    return Option(kind, default, doc, name=transport + suffix)


def transport_recipient_limit(transport: str) -> Parameter[int]:
    """`<transport>_destination_recipient_limit`, a typed handle (qmgr's batches, pipe's argv)."""
    return _of_transport(transport, "_destination_recipient_limit")


def transport_concurrency_limit(transport: str) -> Parameter[int]:
    """`<transport>_destination_concurrency_limit` (qmgr's scheduler, mta/concurrency.py)."""
    return _of_transport(transport, "_destination_concurrency_limit")


def transport_initial_concurrency(transport: str) -> Parameter[int]:
    """`<transport>_initial_destination_concurrency`: the slow start's first window."""
    return _of_transport(transport, "_initial_destination_concurrency")


def transport_failed_cohort_limit(transport: str) -> Parameter[int]:
    """`<transport>_destination_concurrency_failed_cohort_limit`: failures before a
    destination is dead."""
    return _of_transport(transport, "_destination_concurrency_failed_cohort_limit")


def transport_time_limit(transport: str) -> Parameter[int]:
    """`<transport>_time_limit`, a typed handle: the limit of one delivery (pipe)."""
    return _of_transport(transport, "_time_limit")


@dataclass(frozen=True, slots=True)
class ClientParameters:
    """The parameter family of one client, smtp(8) or lmtp(8), as typed handles.

    Postfix's SMTP and LMTP clients are one program reading the same parameters under its own
    name's prefix (smtp_rcpt_timeout, lmtp_rcpt_timeout); sealmail's agents share one client the
    same way (sealmail.mta.agents.session). The families are built once, here, from the table:
    a name missing from MAIN fails at import, not at the first delivery. A field named `hello_*`
    is `helo_*` for smtp and `lhlo_*` for lmtp.
    """

    prefix: str
    hello_name: Parameter[str]
    connect_timeout: Parameter[int]
    hello_timeout: Parameter[int]
    starttls_timeout: Parameter[int]
    mail_timeout: Parameter[int]
    rcpt_timeout: Parameter[int]
    data_init_timeout: Parameter[int]
    data_xfer_timeout: Parameter[int]
    data_done_timeout: Parameter[int]
    rset_timeout: Parameter[int]
    quit_timeout: Parameter[int]
    tls_security_level: Parameter[str]
    tls_policy_maps: Parameter[tuple[str, ...]]
    tls_CAfile: Parameter[str]  # Postfix spells it so
    tls_CApath: Parameter[str]
    tls_protocols: Parameter[tuple[str, ...]]
    tls_mandatory_protocols: Parameter[tuple[str, ...]]
    tls_verify_cert_match: Parameter[tuple[str, ...]]
    tls_secure_cert_match: Parameter[tuple[str, ...]]
    tls_servername: Parameter[str]
    tls_loglevel: Parameter[int]
    tls_cert_file: Parameter[str]
    tls_key_file: Parameter[str]
    sasl_auth_enable: Parameter[bool]
    sasl_password_maps: Parameter[tuple[str, ...]]
    sasl_security_options: Parameter[tuple[str, ...]]
    sasl_mechanism_filter: Parameter[tuple[str, ...]]
    connection_cache_on_demand: Parameter[bool]
    connection_cache_destinations: Parameter[tuple[str, ...]]
    connection_cache_time_limit: Parameter[int]
    connection_reuse_time_limit: Parameter[int]
    skip_quit_response: Parameter[bool]


def _client_family(prefix: str, hello: str) -> ClientParameters:
    handles: dict[str, Any] = {
        name: PARAMETERS[f"{prefix}_{name.replace('hello', hello)}"]
        for name in ClientParameters.__dataclass_fields__
        if name != "prefix"
    }
    return ClientParameters(prefix=prefix, **handles)


SMTP_CLIENT = _client_family("smtp", "helo")
LMTP_CLIENT = _client_family("lmtp", "lhlo")


def lookup(name: str, transports: Iterable[str] | None = None) -> Parameter[Any] | None:
    """The declaration of `name` (plain or per-transport), or None; old names are not followed."""
    found = PARAMETERS.get(name)
    if found is not None:
        return found
    return per_transport(name, transports)


def renamed(name: str) -> Rename | None:
    return RENAMES.get(name)


_NOTED_RENAMES: set[tuple[str, str]] = set()


def note_rename(rename: Rename, where: str) -> None:
    """The log line for an old name: accepted, never rejected (issue 8); once per place and
    process (the queue manager applies a transport's -o overrides for every delivery)."""
    if (where, rename.old) in _NOTED_RENAMES:
        return
    _NOTED_RENAMES.add((where, rename.old))
    log.info(
        "%s: %s is the name Postfix used before %s; accepted as %s",
        where,
        rename.old,
        rename.since,
        rename.new,
    )
