"""Every imapd.conf option sealmail knows, declared once.

As in Cyrus's lib/imapoptions, the registry is the single source for validation, defaults and
documentation: the parser checks values against it, code reads typed values through it
(`config.get(IMAPD.servername)`), `sealmail imapd-conf -d` lists it and
docs/imapd-conf-options.md is generated from it. The shape of a declaration (kind, default, doc,
status) is sealmail.config.schema's, shared with main.cf. Add an option here and nowhere else.
"""

# One declaration per line reads best in a table; long doc strings are allowed here only.
# ruff: noqa: E501

from __future__ import annotations

from typing import Any

from sealmail.config.schema import (
    Kind,
    Option,
    Registry,
    Status,
    boolean,
    choice,
    integer,
    octal,
    optional_boolean,
    optional_string,
    optional_words,
    size,
    string,
    words,
)

RFC4314_RIGHTS = "lrswipkxtecda"  # in canonical order; the store's ALL_RIGHTS


def _unknown_rights(text: str) -> str | None:
    """Refuse what is not a rights string: a typo must not silently weaken the owner's rights."""
    unknown = sorted(set(text) - set(RFC4314_RIGHTS))
    return f"{''.join(unknown)!r}: not RFC 4314 rights ({RFC4314_RIGHTS})" if unknown else None


def _not_percent(text: str) -> str | None:
    """quotawarn is a percentage: a typo like 900 would silently turn warnings off."""
    value = text.strip()
    if value.lstrip("-").isdigit() and not 0 <= int(value) <= 100:
        return f"{value}: not a percentage (0-100)"
    return None


def refuse_listen_address(text: str) -> str | None:
    """metrics_listen (imapd.conf and main.cf): ADDR:PORT, [V6]:PORT or :PORT (loopback)."""
    value = text.strip()
    if not value:
        return None
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return f"{value}: not ADDR:PORT"
    return None


OptionType = Kind  # the name this registry used before the schema was shared
ACCEPTED = Status.ACCEPTED


class IMAPD(Registry):
    """Every imapd.conf option, as a typed handle: `config.get(IMAPD.servername)`."""

    # Layout
    configdirectory = string("/var/lib/sealmail", "Directory of the index, databases and sockets.")
    defaultpartition = string("default", "Partition used for new mailboxes.")
    store_backend = choice("disk", ("disk", "postgresql"), "Where the message store lives: disk (the partitions and the SQLite index under configdirectory) or postgresql (every node sharing one PostgreSQL database, store_dsn; docs/scale-out.md).")
    store_dsn = optional_string("With store_backend: postgresql, the libpq connection string of the database (e.g. 'host=/run/postgresql dbname=sealmail user=cyrus').")
    store_pool_size = integer(8, "With store_backend: postgresql, most database connections one process keeps open.")
    store_poll_interval = integer(5, "With store_backend: postgresql, seconds between a node's reads of the mailboxes its IDLE sessions watch: the backstop when a change notification (LISTEN/NOTIFY) was lost, so IDLE learns of any change within this time.")
    store_blob_grace = integer(86400, "With store_backend: postgresql, seconds a message blob no message names is kept before `sealmail store sweep` removes it (a delivery writes its blob before the transactions that name it).")
    # The account the store's services run as (Cyrus's cyrus_user, become_cyrus())
    cyrus_user = string("cyrus", "Account every service and store tool runs as when started by root (master keeps root only to bind sockets and watch its workers); the store's files belong to it.")
    cyrus_group = optional_string("Group of those processes (default: cyrus_user's primary group); supplementary groups are cyrus_user's, as initgroups(3) sets them.")
    allow_root_services = boolean(False, "sealmail's own: let cyrus_user/cyrus_group be root, so services parse network input as root. For tests and single-user set-ups only; logged loudly when used.")
    servername = optional_string("Name this server gives itself in greetings and Received: (default: hostname).")
    # Namespace
    unixhierarchysep = boolean(False, "Show '/' instead of '.' as the hierarchy separator (Cyrus 3 defaults to yes).")
    altnamespace = boolean(False, "Show other users' and shared folders beside the personal ones.")
    virtdomains = choice("off", ("off", "userid", "on"), "Virtual domains: off, userid (domain from the login name) or on.")
    defaultdomain = optional_string("Domain treated as no domain when virtdomains is set.")
    # Rights
    admins = words((), "Identities with administrative rights on every mailbox.")
    implicit_owner_rights = string("lkxa", "Rights the owner of a mailbox (user.X and every mailbox below it) holds whatever its ACL says, so no SETACL can lock the owner out (Cyrus 3: lkxan; sealmail has no 'n' right).", refuses=_unknown_rights)
    lmtp_admins = optional_words("Identities allowed to authenticate to lmtpd over TCP (default: admins).")
    postuser = string("", "Local part that addresses shared folders: postuser+folder posts to 'folder'.")
    postmaster = string("postmaster", "Local part used as the sender of generated mail (quota warnings).")
    # Delivery
    lmtpsocket = string("{configdirectory}/socket/lmtp", "UNIX socket where lmtpd listens and deliver connects.")
    unix_socket_mode = octal(0o660, "Mode of the UNIX sockets the daemons create (lmtpsocket, ...).")
    unix_socket_group = optional_string("Group of those sockets, e.g. postfix, so the MTA can connect.")
    lmtp_downcase_rcpt = boolean(True, "Fold recipient local part (up to the delimiter) and domain to lower case.")
    recipient_delimiter = string("+", "Character that separates a local part from its detail (user+detail).")
    singleinstancestore = boolean(True, "Store one copy of a message delivered to many mailboxes on one partition.")
    duplicatesuppression = boolean(True, "Deliver a message (by Message-ID) at most once to each mailbox.")
    lmtp_over_quota_perm_failure = boolean(False, "Over quota is a permanent failure (552 5.2.2), not 452 4.2.2.")
    lmtp_strict_quota = boolean(False, "Count the incoming message's size when checking quota at RCPT.")
    quotawarn = integer(90, "Percent of a quota root's storage or message limit at which a delivery sends the user one warning message (again only after usage fell below and crossed again); 0: no warnings.", refuses=_not_percent)
    quotawarnkb = integer(0, "Warn only when less than this many KiB are left (0, or a limit smaller than this: always).")
    quotawarnmsg = integer(0, "Warn only when fewer than this many messages are left (0, or a limit smaller than this: always).")
    maxmessagesize = size(0, "Largest message lmtpd accepts, in bytes; 0 means no limit.")
    lmtptimeout = integer(300, "Seconds an LMTP client may stay silent before the session is closed.")
    lmtp_max_recipients = integer(1000, "Most recipients accepted in one LMTP transaction.")
    lmtp_max_line_length = integer(4096, "Longest LMTP command line, in bytes, CRLF included.")
    lmtp_user_concurrency_limit = integer(10, "Most deliveries to one user at once, all processes together (0: none); more: 451 4.4.5.")
    lmtp_max_bad_commands = integer(20, "Unknown or out-of-order commands tolerated before disconnecting.")
    # Mail the store sends (Sieve redirect, vacation)
    smtp_backend = choice("sendmail", ("sendmail", "host"), "How outgoing mail leaves: sendmail or host.")
    sendmail = string("/usr/sbin/sendmail", "sendmail program for smtp_backend: sendmail.")
    smtp_host = string("localhost:587", "host:port of the MTA for smtp_backend: host.")
    sieve_vacation_min_response = integer(86400, "Shortest vacation :days/:seconds, seconds.")
    sieve_vacation_max_response = integer(90 * 86400, "Longest vacation period, seconds.")
    # Operation
    metrics_listen = optional_string("ADDR:PORT where master serves Prometheus metrics (/metrics) of all its services (needs the `metrics` extra, prometheus-client); unset: none. Keep it on loopback or a management network.", refuses=refuse_listen_address)
    auditlog = boolean(False, "Log one 'auditlog:' line in Cyrus 3.6's shape for every change a session makes to the store: append (LMTP, deliver, Sieve fileinto, IMAP APPEND, COPY, MOVE), expunge (IMAP EXPUNGE, CLOSE, MOVE, POP3 QUIT), create, delete, rename, acl, and lmtpd's Sieve discard, redirect, reject and duplicate suppression, with the session's SESSIONID; also for `sealmail mailbox` and `sealmail admin expunge` (docs/operations.md).")
    # IMAP and ManageSieve sessions
    timeout = integer(32, "Minutes an IMAP or ManageSieve client may stay idle (at least 30).")
    # Sieve
    sievedir = string("{configdirectory}/sieve", "Where users' Sieve scripts live.")
    sieve_maxscriptsize = integer(32, "Largest Sieve script accepted, in KiB.")
    sieve_maxscripts = integer(5, "Most Sieve scripts one user may keep.")
    # POP3
    poptimeout = integer(10, "Minutes a POP3 client may stay idle (at least 10, RFC 1939 3).")
    popminpoll = integer(0, "Minutes between two POP3 logins of one user (LOGIN-DELAY).")
    popexpiretime = integer(-1, "Days POP3 says messages are kept (EXPIRE); negative: NEVER.")
    popuseimapflags = boolean(False, "POP3 RETR sets \\Seen; deleted mail is flagged.")
    # Authentication and TLS (used by lmtpd over TCP, imapd, pop3d, sieve)
    sasl_pwcheck_method = words(("auxprop",), "How passwords are checked, in order: auxprop (sasldb), saslauthd.")
    sasl_auxprop_plugin = string("sasldb", "Auxprop plugin; only sasldb is supported.", status=ACCEPTED)
    sasl_sasldb_path = string("{configdirectory}/sasldb2", "Path of the SASL user database.")
    sasl_saslauthd_path = string("/var/run/saslauthd/mux", "Socket of a running saslauthd.")
    sasl_mech_list = optional_words("Mechanisms offered (default: all supported).")
    sasl_minimum_layer = integer(0, "Minimum protection strength (TLS cipher bits count as the layer).")
    allowplaintext = boolean(False, "Allow PLAIN, LOGIN and IMAP LOGIN without TLS.")
    lmtp_allowplaintext = optional_boolean("Allow plaintext mechanisms on lmtpd without TLS (default: allowplaintext).")
    tls_server_cert = optional_string("PEM file of the server certificate (chain).")
    tls_server_key = optional_string("PEM file of the server certificate's private key.")
    tls_client_ca_file = optional_string("PEM file of CAs whose client certificates are accepted (EXTERNAL).")
    tls_versions = string("tls1_2 tls1_3", "TLS versions offered.")
    auth_failure_delay = integer(2, "Seconds of delay after a failed authentication, times the failures.")
    auth_cache_size = integer(0, "Password checks (successful and failed) remembered in memory per process, least recently used dropped first (entries; 0: no cache, the default). Dovecot's auth_cache_size, counted in entries. Keyed by an HMAC of the user, the user's stored entry and the password under a per-process random key, so the cache holds no password and a changed password is never accepted from it. Off by default because an entry is a fast verifier of a valid password to whoever can read the process's memory; turn it on for login throughput (docs/authentication.md).")
    auth_cache_ttl = integer(3600, "Seconds a successful password check is reused from the cache (auth_cache_size).")
    auth_cache_negative_ttl = integer(3600, "Seconds a failed password check is reused from the cache (0: failures are not kept).")
    urlauth_submit_users = optional_words("Users (the submission server's accounts) that may URLFETCH a URLAUTH URL made for submit+USER (RFC 4467 3); nobody by default.")
    auth_max_failures = integer(3, "Failed authentications before a session is closed.")
    hosts_allow = string("/etc/hosts.allow", "tcp_wrappers allow file.")
    hosts_deny = string("/etc/hosts.deny", "tcp_wrappers deny file.")


# Prefix options: any key starting with the prefix is accepted (partition-default, ...).
PREFIX_OPTIONS: dict[str, Option[Any]] = {
    "partition-": optional_string(
        "Directory of the named message partition (partition-NAME: /path).", name="partition-"
    ),
}

OPTIONS: dict[str, Option[Any]] = IMAPD.options()


def lookup(name: str) -> Option[Any] | None:
    """The declaration for a key, including prefix options."""
    option = OPTIONS.get(name)
    if option is not None:
        return option
    for prefix, option in PREFIX_OPTIONS.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            return option
    return None
