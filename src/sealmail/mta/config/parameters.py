"""Every main.cf parameter the MTA knows, declared once.

As with the imapd.conf registry (sealmail.config.options), this table is the single source for
`postconf -d`, for typed access and for the "unused parameter" warnings. Defaults are Postfix 3.7's
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

import enum
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger("sealmail.mta.config")


class Kind(enum.Enum):
    STRING = "string"
    INT = "int"
    BOOL = "bool"  # yes/no (Postfix accepts only these two words)
    TIME = "time"  # a number with an optional unit s, m, h, d, w
    SIZE = "size"  # bytes, a plain number
    LIST = "list"  # words separated by whitespace and/or commas
    MAPS = "maps"  # a list of lookup tables, type:name


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    kind: Kind
    default: str
    doc: str
    time_unit: str = "s"  # the unit of a TIME value written without one


@dataclass(frozen=True, slots=True)
class Rename:
    """A parameter that Postfix renamed: the old name keeps working as the new one."""

    old: str
    new: str
    since: str  # the Postfix version that renamed it


S, N, B, T, Z, L, M = Kind.STRING, Kind.INT, Kind.BOOL, Kind.TIME, Kind.SIZE, Kind.LIST, Kind.MAPS


def _p(name: str, kind: Kind, default: str, doc: str, unit: str = "s") -> Parameter:
    return Parameter(name, kind, default, doc, unit)


_PARAMETERS: tuple[Parameter, ...] = (
    # Identity and layout
    _p("config_directory", S, "/etc/sealmail", "Directory of main.cf and master.cf."),
    _p(
        "queue_directory",
        S,
        "/var/spool/sealmail",
        "Root of the mail queue (incoming, active, deferred, hold).",
    ),
    _p(
        "data_directory", S, "/var/lib/sealmail/mta", "Directory of the MTA's caches and databases."
    ),
    _p("maillog_file", S, "", "File the MTA logs to; empty means standard error / syslog."),
    _p(
        "maillog_file_prefixes",
        L,
        "/var, /dev/stdout",
        "Allowed prefixes of maillog_file (Postfix's safety check).",
    ),
    _p("mail_name", S, "sealmail", "Name of the mail system in greetings and Received: headers."),
    _p(
        "mail_owner",
        S,
        "postfix",
        "Account that owns the queue and that the MTA started as root runs as after binding its listeners (smtpd, qmgr, pickup, cleanup, the lmtp/smtp clients).",
    ),
    _p(
        "allow_root_services",
        B,
        "no",
        "sealmail's own: let mail_owner be root (uid or gid 0); for tests and single-user set-ups only, logged loudly when used.",
    ),
    _p(
        "default_privs",
        S,
        "nobody",
        "Account that local delivery to files and commands runs as by default.",
    ),
    _p("compatibility_level", S, "3.6", "Postfix compatibility level whose defaults we follow."),
    _p("myhostname", S, "", "Fully qualified name of this host (default: the system's FQDN)."),
    _p("mydomain", S, "", "Domain of this host (default: myhostname minus its first label)."),
    _p("myorigin", S, "$myhostname", "Domain appended to addresses posted locally without one."),
    _p(
        "mydestination",
        L,
        "$myhostname, localhost.$mydomain, localhost",
        "Domains delivered by local_transport.",
    ),
    _p(
        "inet_interfaces",
        L,
        "all",
        "Addresses the SMTP server listens on (all, loopback-only, list).",
    ),
    _p("inet_protocols", L, "all", "IP versions used: ipv4, ipv6 or all."),
    _p("mynetworks", L, "127.0.0.0/8 [::1]/128", "Trusted client networks (permit_mynetworks)."),
    _p(
        "mynetworks_style",
        S,
        "host",
        "How mynetworks is computed when unset: host, subnet or class.",
    ),
    _p("append_dot_mydomain", B, "no", "Append .$mydomain to addresses of the form user@host."),
    _p("syslog_name", S, "sealmail", "Program name in log lines."),
    _p("service_name", S, "", "Name of the master.cf service the process runs as (set by master)."),
    _p("process_name", S, "", "Name of the running program (set at start)."),
    _p(
        "import_environment",
        L,
        "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C",
        "Environment variables that services inherit.",
    ),
    _p(
        "export_environment",
        L,
        "TZ MAIL_CONFIG LANG",
        "Environment variables passed to external commands.",
    ),
    # Routing
    _p(
        "relayhost",
        S,
        "",
        "Next hop for non-local mail ([host]:port); empty means DNS, unsupported here.",
    ),
    _p("relay_domains", L, "", "Domains this MTA relays to (delivered with relay_transport)."),
    _p("relay_transport", S, "relay", "Transport for relay_domains."),
    _p("default_transport", S, "smtp", "Transport for mail that matches no other class."),
    _p(
        "local_transport",
        S,
        "local:$myhostname",
        "Transport for mydestination and inet_interfaces.",
    ),
    _p(
        "mailbox_transport",
        S,
        "",
        "Transport the local agent hands mailbox delivery to (seed 2.1).",
    ),
    _p(
        "fallback_transport",
        S,
        "",
        "Transport for local recipients without a UNIX account (seed 5.2).",
    ),
    _p("virtual_transport", S, "virtual", "Transport for virtual_mailbox_domains."),
    _p("transport_maps", M, "", "Tables mapping recipients or domains to transport:nexthop."),
    _p("virtual_alias_maps", M, "", "Tables rewriting recipients in cleanup (recursive)."),
    _p(
        "virtual_alias_domains",
        L,
        "$virtual_alias_maps",
        "Domains whose every address is an alias.",
    ),
    _p(
        "virtual_mailbox_domains",
        L,
        "$virtual_mailbox_maps",
        "Domains delivered by virtual_transport.",
    ),
    _p("virtual_mailbox_maps", M, "", "Valid recipients of virtual_mailbox_domains."),
    _p("virtual_alias_recursion_limit", N, "1000", "Deepest nesting of virtual alias expansion."),
    _p(
        "virtual_alias_expansion_limit",
        N,
        "1000",
        "Most addresses one alias expansion may produce.",
    ),
    _p(
        "virtual_alias_address_length_limit",
        N,
        "1000",
        "Longest address an alias expansion may produce.",
    ),
    _p("canonical_maps", M, "", "Tables rewriting sender and recipient addresses."),
    _p("sender_canonical_maps", M, "", "Tables rewriting sender addresses."),
    _p("recipient_canonical_maps", M, "", "Tables rewriting recipient addresses."),
    _p("recipient_delimiter", S, "", "Characters separating a user from an extension (user+ext)."),
    _p(
        "propagate_unmatched_extensions",
        L,
        "canonical, virtual",
        "Rewrites that keep an address extension the table did not match.",
    ),
    _p("swap_bangpath", B, "yes", "Rewrite site!user to user@site."),
    _p("allow_percent_hack", B, "yes", "Rewrite user%domain to user@domain."),
    _p(
        "parent_domain_matches_subdomains",
        L,
        "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,"
        "qmqpd_authorized_clients,relay_domains,smtpd_access_maps",
        "Features where a domain name also matches its subdomains.",
    ),
    # Local delivery (used by the next issue)
    _p("alias_maps", M, "hash:/etc/aliases", "Alias tables read by the local agent."),
    _p("alias_database", M, "hash:/etc/aliases", "Alias tables built by newaliases."),
    # Postfix's default is "proxy:unix:passwd.byname $alias_maps"; a sealed store's users are not
    # UNIX accounts, so sealmail starts empty (the LMTP server's 550 decides, as a bounce) and
    # `sealmail:/etc/sealmail/imapd.conf` asks the store at RCPT time.
    _p(
        "local_recipient_maps",
        M,
        "",
        "Valid local recipients (e.g. sealmail:IMAPD_CONF); empty accepts any local part.",
    ),
    _p("home_mailbox", S, "", "Mailbox file or maildir/ relative to the home directory."),
    _p("mailbox_command", S, "", "Command the local agent runs to deliver to a mailbox."),
    _p("mailbox_size_limit", Z, "51200000", "Largest mailbox file the local agent appends to."),
    _p(
        "forward_path",
        L,
        "$home/.forward${recipient_delimiter}${extension}, $home/.forward",
        ".forward files the local agent looks for.",
    ),
    _p("allow_mail_to_commands", L, "alias, forward", "Where |command destinations are allowed."),
    _p("allow_mail_to_files", L, "alias, forward", "Where /file destinations are allowed."),
    _p("luser_relay", S, "", "Destination for unknown local recipients."),
    _p("owner_request_special", B, "yes", "Treat owner-list and list-request addresses specially."),
    _p("biff", B, "yes", "Notify the comsat service of local deliveries."),
    _p(
        "mail_spool_directory",
        S,
        "/var/mail",
        "Directory of the UNIX mbox files local(8) appends to.",
    ),
    _p("deliver_lock_attempts", N, "20", "Attempts to lock a mailbox before delivery is deferred."),
    _p("deliver_lock_delay", T, "1s", "Time between attempts to lock a mailbox."),
    _p("stale_lock_time", T, "500s", "Age after which a mailbox dot-lock is removed as stale."),
    _p(
        "frozen_delivered_to",
        B,
        "yes",
        "Keep the Delivered-To: address of local(8) the recipient it was given, through alias and .forward expansion.",
    ),
    # SMTP server
    _p("smtpd_banner", S, "$myhostname ESMTP $mail_name", "Text after 220 in the greeting."),
    _p(
        "smtpd_timeout",
        T,
        "${stress?{10}:{300}}s",
        "Time the server waits for a client command or data.",
    ),
    _p("smtpd_starttls_timeout", T, "${stress?{10}:{300}}s", "Time allowed for the TLS handshake."),
    _p("smtpd_recipient_limit", N, "1000", "Most recipients accepted in one transaction."),
    _p(
        "smtpd_hard_error_limit",
        N,
        "${stress?{1}:{20}}",
        "Errors after which the client is dropped.",
    ),
    _p("smtpd_soft_error_limit", N, "10", "Errors after which each reply is delayed."),
    _p("smtpd_error_sleep_time", T, "1s", "Delay per reply once the soft error limit is reached."),
    _p(
        "smtpd_junk_command_limit",
        N,
        "${stress?{1}:{100}}",
        "NOOP/RSET/VRFY/ETRN commands allowed per session before they count as errors.",
    ),
    _p("smtpd_helo_required", B, "no", "Require HELO or EHLO before MAIL."),
    _p("smtpd_delay_reject", B, "yes", "Apply client, helo and sender restrictions at RCPT time."),
    _p("smtpd_client_restrictions", L, "", "Restrictions on the client address."),
    _p("smtpd_helo_restrictions", L, "", "Restrictions on the HELO name."),
    _p("smtpd_sender_restrictions", L, "", "Restrictions on the MAIL FROM address."),
    _p(
        "smtpd_relay_restrictions",
        L,
        "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
        "Relay control applied at RCPT before smtpd_recipient_restrictions.",
    ),
    _p("smtpd_recipient_restrictions", L, "", "Restrictions on each RCPT TO address."),
    _p("smtpd_data_restrictions", L, "", "Restrictions applied at DATA."),
    _p("smtpd_restriction_classes", L, "", "Names of user-defined restriction lists."),
    _p(
        "smtpd_reject_unlisted_recipient",
        B,
        "yes",
        "Reject recipients not known to their address class.",
    ),
    _p("smtpd_client_connection_count_limit", N, "50", "Simultaneous connections per client."),
    _p(
        "smtpd_client_event_limit_exceptions",
        L,
        "$mynetworks",
        "Clients exempt from the connection and rate limits.",
    ),
    _p("smtpd_authorized_verp_clients", L, "", "Clients allowed to use XVERP."),
    _p("smtpd_discard_ehlo_keywords", L, "", "EHLO keywords not announced (and not honoured)."),
    _p("smtpd_sasl_auth_enable", B, "no", "Offer AUTH to clients."),
    _p(
        "smtpd_sasl_type", S, "sealmail", "SASL implementation the server uses (sealmail's sasldb)."
    ),
    _p("smtpd_sasl_path", S, "smtpd", "SASL application name or socket path."),
    _p(
        "smtpd_sasl_imapd_conf",
        S,
        "/etc/imapd.conf",
        "The store's imapd.conf whose sasl_* settings (sasldb, saslauthd, mechanisms) smtpd AUTH uses.",
    ),
    _p(
        "smtpd_sasl_security_options",
        L,
        "noanonymous",
        "Mechanism properties required without TLS.",
    ),
    _p(
        "smtpd_sasl_tls_security_options",
        L,
        "$smtpd_sasl_security_options",
        "Mechanism properties required under TLS.",
    ),
    _p("smtpd_sasl_local_domain", S, "", "Realm appended to login names without one."),
    _p("smtpd_sasl_authenticated_header", B, "no", "Name the login in the Received: header."),
    _p("smtpd_tls_security_level", S, "", "TLS offer of the server: none, may or encrypt."),
    _p("smtpd_tls_cert_file", S, "", "PEM certificate chain of the server."),
    _p("smtpd_tls_key_file", S, "$smtpd_tls_cert_file", "PEM private key of the server."),
    _p("smtpd_tls_CAfile", S, "", "CA certificates for client certificates."),
    _p("smtpd_tls_auth_only", B, "no", "Offer AUTH only after STARTTLS."),
    _p("smtpd_tls_loglevel", N, "0", "Detail of TLS logging."),
    _p("smtpd_tls_received_header", B, "no", "Note the TLS protocol and cipher in Received:."),
    _p(
        "smtpd_tls_mandatory_protocols", L, ">=TLSv1", "TLS versions allowed when TLS is mandatory."
    ),
    _p("smtpd_peername_lookup", B, "yes", "Look up the client's name (never done here: no DNS)."),
    _p("smtpd_forbid_bare_newline", S, "no", "Reject bare LF in SMTP commands and data."),
    _p("smtpd_proxy_filter", S, "", "Before-queue content filter (not supported)."),
    _p("smtpd_milters", L, "", "Milter applications (not supported)."),
    _p("smtputf8_enable", B, "yes", "Offer SMTPUTF8 (RFC 6531)."),
    _p("strict_rfc821_envelopes", B, "no", "Require <> around MAIL and RCPT addresses."),
    _p("disable_vrfy_command", B, "no", "Refuse VRFY."),
    _p("message_size_limit", Z, "10240000", "Largest message accepted, in bytes (SIZE, RFC 1870)."),
    _p("header_size_limit", Z, "102400", "Most bytes of one header kept by cleanup."),
    _p("line_length_limit", N, "2048", "Longest line of a message stored as one record."),
    _p("hopcount_limit", N, "50", "Most Received: headers before a message is bounced as a loop."),
    _p("mime_nesting_limit", N, "100", "Deepest MIME nesting inspected."),
    _p("in_flow_delay", T, "1s", "Delay of each posting while the queue manager falls behind."),
    _p("content_filter", S, "", "After-queue content filter transport (not supported)."),
    _p("receive_override_options", L, "", "Cleanup features to switch off for this service."),
    _p("always_bcc", S, "", "Address that receives a copy of every message."),
    _p("authorized_submit_users", M, "static:anyone", "Users allowed to post with sendmail."),
    # Queue manager
    _p("queue_run_delay", T, "300s", "Time between scans of the deferred queue."),
    _p("minimal_backoff_time", T, "300s", "Least time a deferred message waits before a retry."),
    _p("maximal_backoff_time", T, "4000s", "Most time a deferred message waits before a retry."),
    _p(
        "maximal_queue_lifetime", T, "5d", "Time after which an undeliverable message bounces.", "d"
    ),
    _p("bounce_queue_lifetime", T, "5d", "maximal_queue_lifetime for bounces.", "d"),
    _p("delay_warning_time", T, "0h", "Time after which a delay notice is sent (0: never).", "h"),
    _p("transport_retry_time", T, "60s", "Time between attempts to contact a failing transport."),
    _p("qmgr_message_active_limit", N, "20000", "Most messages in the active queue."),
    _p(
        "qmgr_message_recipient_limit",
        N,
        "20000",
        "Most recipients in memory in the queue manager.",
    ),
    _p(
        "initial_destination_concurrency",
        N,
        "5",
        "Deliveries to a new destination in parallel at first.",
    ),
    _p("default_destination_concurrency_limit", N, "20", "Parallel deliveries per destination."),
    _p("default_destination_recipient_limit", N, "50", "Recipients per delivery (seed section 6)."),
    _p("default_destination_rate_delay", T, "0s", "Pause between deliveries to one destination."),
    _p(
        "default_destination_concurrency_failed_cohort_limit",
        N,
        "1",
        "Failed pseudo-cohorts after which a destination is throttled.",
    ),
    _p("default_recipient_limit", N, "20000", "Recipients in memory per transport."),
    _p("default_extra_recipient_limit", N, "1000", "Extra recipients read ahead per transport."),
    _p("default_delivery_slot_cost", N, "5", "Preemption cost of a delivery slot."),
    _p("default_minimum_delivery_slots", N, "3", "Slots a message needs before it can preempt."),
    _p("default_recipient_refill_limit", N, "100", "Recipients added per refill of a job."),
    _p("default_recipient_refill_delay", T, "5s", "Wait before a job's recipients are refilled."),
    _p(
        "default_delivery_slot_discount", N, "50", "Percent discount of a slot's cost (preemption)."
    ),
    _p("default_delivery_slot_loan", N, "3", "Slots a job may borrow before preemption."),
    _p(
        "default_destination_concurrency_negative_feedback",
        S,
        "1",
        "Concurrency decrease after a failed delivery (1 or 1/concurrency).",
    ),
    _p(
        "default_destination_concurrency_positive_feedback",
        S,
        "1",
        "Concurrency increase after a good delivery (1 or 1/concurrency).",
    ),
    _p("default_transport_rate_delay", T, "0s", "Pause between deliveries through one transport."),
    _p("local_destination_concurrency_limit", N, "2", "Parallel deliveries per local recipient."),
    _p(
        "local_destination_recipient_limit",
        N,
        "1",
        "Recipients per local delivery (one: .forward).",
    ),
    _p("defer_transports", L, "", "Transports whose mail waits until `postqueue -f`."),
    _p("hash_queue_names", L, "deferred, defer", "Queues split into subdirectories."),
    _p("hash_queue_depth", N, "1", "Levels of queue subdirectories."),
    _p("enable_long_queue_ids", B, "no", "Use long, time-ordered queue ids."),
    _p("soft_bounce", B, "no", "Turn every permanent failure into a deferral (testing aid)."),
    _p("notify_classes", L, "resource, software", "Problems reported to the postmaster."),
    _p(
        "bounce_notice_recipient", S, "postmaster", "Recipient of bounce notices to the postmaster."
    ),
    _p("bounce_size_limit", Z, "50000", "Most bytes of the original message returned in a bounce."),
    _p("empty_address_recipient", S, "MAILER-DAEMON", "Recipient of mail addressed to <>."),
    _p("double_bounce_sender", S, "double-bounce", "Sender of bounces that must not bounce back."),
    _p("delay_logging_resolution_limit", N, "2", "Decimals in delay= and delays= log fields."),
    _p("duplicate_filter_limit", N, "1000", "Recipients remembered to drop duplicates."),
    _p("command_time_limit", T, "1000s", "Time limit of an external delivery command."),
    # Processes (master)
    _p(
        "default_process_limit",
        N,
        "100",
        "Process limit of a master.cf service whose maxproc is '-'.",
    ),
    _p("max_idle", T, "100s", "Time an idle service process waits for work before it exits."),
    _p("max_use", N, "100", "Requests a service process handles before it exits."),
    _p("ipc_timeout", T, "3600s", "Time limit of an internal request."),
    _p("daemon_timeout", T, "18000s", "Time limit of a service process's request."),
    _p("service_throttle_time", T, "60s", "Wait before a failing service is restarted."),
    # Lookup tables
    _p(
        "default_database_type",
        S,
        "hash",
        "Table type when a table is named without one (postmap).",
    ),
    # SMTP and LMTP clients (one client core, as in Postfix >= 2.3)
    _p("smtp_fallback_relay", L, "", "Hosts tried when the next hop fails."),
    _p("smtp_helo_name", S, "$myhostname", "Name sent in HELO/EHLO."),
    _p("smtp_bind_address", S, "", "Local address of outgoing SMTP connections."),
    _p("smtp_connect_timeout", T, "30s", "Time allowed to connect."),
    _p("smtp_helo_timeout", T, "300s", "Time allowed for the greeting and EHLO reply."),
    _p("smtp_mail_timeout", T, "300s", "Time allowed for the MAIL reply."),
    _p("smtp_rcpt_timeout", T, "300s", "Time allowed for each RCPT reply."),
    _p("smtp_data_init_timeout", T, "120s", "Time allowed for the DATA reply."),
    _p("smtp_data_xfer_timeout", T, "180s", "Time allowed for each chunk of message content."),
    _p("smtp_data_done_timeout", T, "600s", "Time allowed for the reply after the final dot."),
    _p("smtp_rset_timeout", T, "20s", "Time allowed for the RSET reply."),
    _p("smtp_quit_timeout", T, "300s", "Time allowed for the QUIT reply."),
    _p("smtp_starttls_timeout", T, "300s", "Time allowed for the TLS handshake."),
    _p("smtp_skip_quit_response", B, "yes", "Close without waiting for the QUIT reply."),
    _p(
        "smtp_connection_cache_on_demand",
        B,
        "yes",
        "Keep connections open while a destination has mail.",
    ),
    _p(
        "smtp_connection_cache_destinations",
        L,
        "",
        "Destinations whose connections are always cached.",
    ),
    _p("smtp_connection_cache_time_limit", T, "2s", "Time an idle cached connection is kept."),
    _p("smtp_connection_reuse_time_limit", T, "300s", "Time a connection may be reused for."),
    _p("smtp_sasl_auth_enable", B, "no", "Authenticate to the server."),
    _p("smtp_sasl_password_maps", M, "", "Tables of user:password by next hop."),
    _p(
        "smtp_sasl_security_options",
        L,
        "noplaintext, noanonymous",
        "Mechanism properties required.",
    ),
    _p("smtp_sasl_mechanism_filter", L, "", "Mechanisms the client may choose from."),
    _p("smtp_tls_security_level", S, "", "TLS policy: none, may, encrypt or verify."),
    _p("smtp_tls_CAfile", S, "", "CA certificates that verify the server."),
    _p("smtp_tls_cert_file", S, "", "Client certificate."),
    _p("smtp_tls_key_file", S, "$smtp_tls_cert_file", "Client key."),
    _p("smtp_tls_loglevel", N, "0", "Detail of TLS logging."),
    _p("lmtp_lhlo_name", S, "$myhostname", "Name sent in LHLO."),
    _p("lmtp_bind_address", S, "", "Local address of outgoing LMTP connections over TCP."),
    _p(
        "lmtp_tcp_port",
        S,
        "24",
        "Port of an inet: next hop without one (Postfix < 2.3; lmtp service).",
    ),
    _p("lmtp_connect_timeout", T, "0s", "Time allowed to connect (0: the system's limit)."),
    _p("lmtp_lhlo_timeout", T, "300s", "Time allowed for the greeting and LHLO reply."),
    _p("lmtp_mail_timeout", T, "300s", "Time allowed for the MAIL reply."),
    _p("lmtp_rcpt_timeout", T, "300s", "Time allowed for each RCPT reply."),
    _p("lmtp_data_init_timeout", T, "120s", "Time allowed for the DATA reply."),
    _p("lmtp_data_xfer_timeout", T, "180s", "Time allowed for each chunk of message content."),
    _p(
        "lmtp_data_done_timeout",
        T,
        "600s",
        "Time allowed for each recipient's reply after the dot.",
    ),
    _p("lmtp_rset_timeout", T, "20s", "Time allowed for the RSET reply."),
    _p("lmtp_quit_timeout", T, "300s", "Time allowed for the QUIT reply."),
    _p("lmtp_starttls_timeout", T, "300s", "Time allowed for the TLS handshake."),
    _p("lmtp_skip_quit_response", B, "no", "Close without waiting for the QUIT reply."),
    _p(
        "lmtp_connection_cache_on_demand",
        B,
        "yes",
        "Keep sessions open (reused with RSET) while a destination has mail.",
    ),
    _p(
        "lmtp_connection_cache_destinations",
        L,
        "",
        "Destinations whose sessions are always cached.",
    ),
    _p("lmtp_connection_cache_time_limit", T, "2s", "Time an idle cached session is kept."),
    _p("lmtp_connection_reuse_time_limit", T, "300s", "Time a session may be reused for."),
    _p("lmtp_sasl_auth_enable", B, "no", "Authenticate to the LMTP server (seed 9.1 cyrus-inet)."),
    _p(
        "lmtp_sasl_password_maps", M, "", "Tables of user:password by next-hop host (seed 2.2.1.2)."
    ),
    _p(
        "lmtp_sasl_security_options",
        L,
        "noplaintext, noanonymous",
        "Mechanism properties required.",
    ),
    _p("lmtp_sasl_mechanism_filter", L, "", "Mechanisms the client may choose from."),
    _p("lmtp_tls_security_level", S, "", "TLS policy: none, may, encrypt or verify."),
    _p("lmtp_tls_CAfile", S, "", "CA certificates that verify the server."),
    _p("lmtp_tls_cert_file", S, "", "Client certificate."),
    _p("lmtp_tls_key_file", S, "$lmtp_tls_cert_file", "Client key."),
    _p("lmtp_tls_loglevel", N, "0", "Detail of TLS logging."),
    # Tools
    _p("sendmail_path", S, "/usr/sbin/sendmail", "Path of the sendmail command."),
    _p("mailq_path", S, "/usr/bin/mailq", "Path of the mailq command."),
    _p("newaliases_path", S, "/usr/bin/newaliases", "Path of the newaliases command."),
)

PARAMETERS: dict[str, Parameter] = {p.name: p for p in _PARAMETERS}

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

# Delivery agents whose master.cf services get per-transport parameters (as Postfix's postconf).
DELIVERY_AGENTS = frozenset({"lmtp", "smtp", "local", "virtual", "pipe", "error", "discard"})

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


def is_valid_name(name: str) -> bool:
    """A main.cf parameter name: letters, digits, '_', and '-' or '.' as in transport names."""
    return bool(_NAME.match(name))


def per_transport(name: str, transports: Iterable[str] | None = None) -> Parameter | None:
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
        return Parameter(name, kind, default, doc)
    return None


def lookup(name: str, transports: Iterable[str] | None = None) -> Parameter | None:
    """The declaration of `name` (plain or per-transport), or None; old names are not followed."""
    found = PARAMETERS.get(name)
    if found is not None:
        return found
    return per_transport(name, transports)


def renamed(name: str) -> Rename | None:
    return RENAMES.get(name)


def note_rename(rename: Rename, where: str) -> None:
    """The log line for an old name: accepted, never rejected (issue 8)."""
    log.info(
        "%s: %s is the name Postfix used before %s; accepted as %s",
        where,
        rename.old,
        rename.since,
        rename.new,
    )
