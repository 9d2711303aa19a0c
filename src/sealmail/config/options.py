"""Every imapd.conf option sealmail knows, declared once.

As in Cyrus's lib/imapoptions, the registry is the single source for validation, defaults and
documentation: the parser checks values against it, code reads typed values through it, and the
docs are generated from it. Add an option here and nowhere else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class OptionType(enum.Enum):
    STRING = "string"
    INT = "int"
    SWITCH = "switch"  # yes/no/on/off/true/false/1/0
    ENUM = "enum"
    STRINGLIST = "stringlist"  # whitespace-separated words (admins: a b c)
    BYTESIZE = "bytesize"  # integer with optional K/M/G suffix
    OCTAL = "octal"  # file mode such as 0660


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    type: OptionType
    default: object
    doc: str
    choices: tuple[str, ...] = ()


def _opt(name: str, type_: OptionType, default: object, doc: str, *choices: str) -> Option:
    return Option(name, type_, default, doc, tuple(choices))


STR, INT, SWITCH, ENUM, WORDS, SIZE, OCTAL = (
    OptionType.STRING,
    OptionType.INT,
    OptionType.SWITCH,
    OptionType.ENUM,
    OptionType.STRINGLIST,
    OptionType.BYTESIZE,
    OptionType.OCTAL,
)

# Prefix options: any key starting with the prefix is accepted (partition-default, ...).
PREFIX_OPTIONS: dict[str, Option] = {
    "partition-": _opt(
        "partition-", STR, None, "Directory of the named message partition (partition-NAME: /path)."
    ),
}

_OPTIONS: tuple[Option, ...] = (
    # Layout
    _opt(
        "configdirectory",
        STR,
        "/var/lib/sealmail",
        "Directory of the index, databases and sockets.",
    ),
    _opt("defaultpartition", STR, "default", "Partition used for new mailboxes."),
    # The account the store's services run as (Cyrus's cyrus_user, become_cyrus())
    _opt(
        "cyrus_user",
        STR,
        "cyrus",
        "Account every service and store tool runs as when started by root (master keeps root "
        "only to bind sockets and watch its workers); the store's files belong to it.",
    ),
    _opt(
        "cyrus_group",
        STR,
        None,
        "Group of those processes (default: cyrus_user's primary group); supplementary groups "
        "are cyrus_user's, as initgroups(3) sets them.",
    ),
    _opt(
        "allow_root_services",
        SWITCH,
        False,
        "sealmail's own: let cyrus_user/cyrus_group be root, so services parse network input "
        "as root. For tests and single-user set-ups only; logged loudly when used.",
    ),
    _opt(
        "servername",
        STR,
        None,
        "Name this server gives itself in greetings and Received: (default: hostname).",
    ),
    # Namespace
    _opt(
        "unixhierarchysep",
        SWITCH,
        False,
        "Show '/' instead of '.' as the hierarchy separator (Cyrus 3 defaults to yes).",
    ),
    _opt(
        "altnamespace",
        SWITCH,
        False,
        "Show other users' and shared folders beside the personal ones.",
    ),
    _opt(
        "virtdomains",
        ENUM,
        "off",
        "Virtual domains: off, userid (domain from the login name) or on.",
        "off",
        "userid",
        "on",
    ),
    _opt("defaultdomain", STR, None, "Domain treated as no domain when virtdomains is set."),
    # Rights
    _opt("admins", WORDS, (), "Identities with administrative rights on every mailbox."),
    _opt(
        "lmtp_admins",
        WORDS,
        None,
        "Identities allowed to authenticate to lmtpd over TCP (default: admins).",
    ),
    _opt(
        "postuser",
        STR,
        "",
        "Local part that addresses shared folders: postuser+folder posts to 'folder'.",
    ),
    _opt("postmaster", STR, "postmaster", "Local part used as the sender of generated mail."),
    # Delivery
    _opt(
        "lmtpsocket",
        STR,
        "{configdirectory}/socket/lmtp",
        "UNIX socket where lmtpd listens and deliver connects.",
    ),
    _opt(
        "unix_socket_mode",
        OCTAL,
        0o660,
        "Mode of the UNIX sockets the daemons create (lmtpsocket, ...).",
    ),
    _opt(
        "unix_socket_group",
        STR,
        None,
        "Group of those sockets, e.g. postfix, so the MTA can connect.",
    ),
    _opt(
        "lmtp_downcase_rcpt",
        SWITCH,
        True,
        "Fold recipient local part (up to the delimiter) and domain to lower case.",
    ),
    _opt(
        "recipient_delimiter",
        STR,
        "+",
        "Character that separates a local part from its detail (user+detail).",
    ),
    _opt(
        "singleinstancestore",
        SWITCH,
        True,
        "Store one copy of a message delivered to many mailboxes on one partition.",
    ),
    _opt(
        "duplicatesuppression",
        SWITCH,
        True,
        "Deliver a message (by Message-ID) at most once to each mailbox.",
    ),
    _opt(
        "lmtp_over_quota_perm_failure",
        SWITCH,
        False,
        "Over quota is a permanent failure (552 5.2.2), not 452 4.2.2.",
    ),
    _opt(
        "lmtp_strict_quota",
        SWITCH,
        False,
        "Count the incoming message's size when checking quota at RCPT.",
    ),
    _opt("maxmessagesize", SIZE, 0, "Largest message lmtpd accepts, in bytes; 0 means no limit."),
    _opt(
        "lmtptimeout",
        INT,
        300,
        "Seconds an LMTP client may stay silent before the session is closed.",
    ),
    _opt("lmtp_max_recipients", INT, 1000, "Most recipients accepted in one LMTP transaction."),
    _opt("lmtp_max_line_length", INT, 4096, "Longest LMTP command line, in bytes, CRLF included."),
    _opt(
        "lmtp_user_concurrency_limit",
        INT,
        10,
        "Most deliveries to one user at once, all processes together (0: none); more: 451 4.4.5.",
    ),
    _opt(
        "lmtp_max_bad_commands",
        INT,
        20,
        "Unknown or out-of-order commands tolerated before disconnecting.",
    ),
    # Mail the store sends (Sieve redirect, vacation)
    _opt(
        "smtp_backend",
        ENUM,
        "sendmail",
        "How outgoing mail leaves: sendmail or host.",
        "sendmail",
        "host",
    ),
    _opt("sendmail", STR, "/usr/sbin/sendmail", "sendmail program for smtp_backend: sendmail."),
    _opt("smtp_host", STR, "localhost:587", "host:port of the MTA for smtp_backend: host."),
    _opt("sieve_vacation_min_response", INT, 86400, "Shortest vacation :days/:seconds, seconds."),
    _opt("sieve_vacation_max_response", INT, 90 * 86400, "Longest vacation period, seconds."),
    # IMAP and ManageSieve sessions
    _opt("timeout", INT, 32, "Minutes an IMAP or ManageSieve client may stay idle (at least 30)."),
    # Sieve
    _opt("sievedir", STR, "{configdirectory}/sieve", "Where users' Sieve scripts live."),
    _opt("sieve_maxscriptsize", INT, 32, "Largest Sieve script accepted, in KiB."),
    _opt("sieve_maxscripts", INT, 5, "Most Sieve scripts one user may keep."),
    # POP3
    _opt("poptimeout", INT, 10, "Minutes a POP3 client may stay idle (at least 10, RFC 1939 3)."),
    _opt("popminpoll", INT, 0, "Minutes between two POP3 logins of one user (LOGIN-DELAY)."),
    _opt("popexpiretime", INT, -1, "Days POP3 says messages are kept (EXPIRE); negative: NEVER."),
    _opt("popuseimapflags", SWITCH, False, "POP3 RETR sets \\Seen; deleted mail is flagged."),
    # Authentication and TLS (used by lmtpd over TCP, imapd, pop3d, sieve)
    _opt(
        "sasl_pwcheck_method",
        WORDS,
        ("auxprop",),
        "How passwords are checked, in order: auxprop (sasldb), saslauthd.",
    ),
    _opt("sasl_auxprop_plugin", STR, "sasldb", "Auxprop plugin; only sasldb is supported."),
    _opt("sasl_sasldb_path", STR, "{configdirectory}/sasldb2", "Path of the SASL user database."),
    _opt("sasl_saslauthd_path", STR, "/var/run/saslauthd/mux", "Socket of a running saslauthd."),
    _opt("sasl_mech_list", WORDS, None, "Mechanisms offered (default: all supported)."),
    _opt(
        "sasl_minimum_layer",
        INT,
        0,
        "Minimum protection strength (TLS cipher bits count as the layer).",
    ),
    _opt("allowplaintext", SWITCH, False, "Allow PLAIN, LOGIN and IMAP LOGIN without TLS."),
    _opt(
        "lmtp_allowplaintext",
        SWITCH,
        None,
        "Allow plaintext mechanisms on lmtpd without TLS (default: allowplaintext).",
    ),
    _opt("tls_server_cert", STR, None, "PEM file of the server certificate (chain)."),
    _opt("tls_server_key", STR, None, "PEM file of the server certificate's private key."),
    _opt(
        "tls_client_ca_file",
        STR,
        None,
        "PEM file of CAs whose client certificates are accepted (EXTERNAL).",
    ),
    _opt("tls_versions", STR, "tls1_2 tls1_3", "TLS versions offered."),
    _opt(
        "auth_failure_delay",
        INT,
        2,
        "Seconds of delay after a failed authentication, times the failures.",
    ),
    _opt("auth_max_failures", INT, 3, "Failed authentications before a session is closed."),
    _opt("hosts_allow", STR, "/etc/hosts.allow", "tcp_wrappers allow file."),
    _opt("hosts_deny", STR, "/etc/hosts.deny", "tcp_wrappers deny file."),
)

OPTIONS: dict[str, Option] = {o.name: o for o in _OPTIONS}


def lookup(name: str) -> Option | None:
    """The declaration for a key, including prefix options."""
    option = OPTIONS.get(name)
    if option is not None:
        return option
    for prefix, option in PREFIX_OPTIONS.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            return option
    return None
