"""smtpd: the MTA's SMTP server, an asyncio driver around the sans-I/O core in SMTP mode.

Bytes in -> `ServerConnection` events -> decisions -> replies out, as sealmail.server.lmtpd does
for LMTP. The decisions that are the MTA's own live here:

- access restrictions (sealmail.mta.restrictions): every smtpd_*_restrictions stage, evaluated
  by the engine as Postfix does; this module only tells it where the session is (connect, HELO,
  MAIL, RCPT, DATA, end of data) and sends the refusal it returns. With smtpd_delay_reject = no
  a client refused at connect gets the refusal as its greeting and 503 to every command but
  QUIT, as Postfix's smtpd. What access tables ask of the message (HOLD, DISCARD, PREPEND,
  REDIRECT) is done when it is queued.
- the message: cleanup (sealmail.mta.cleanup.prepare_message) in the event loop, then the
  process's CommitThread writes it; the 250 goes out only after the queue file and its
  directory are fsync'd.
- message_size_limit, smtpd_recipient_limit and smtpd_hard_error_limit are the core's limits;
  smtpd_timeout bounds every read.
- STARTTLS (smtpd_tls_security_level may/encrypt; the context is sealmail.mta.smtpd_tls's, from
  smtpd_tls_cert_file/key_file or smtpd_tls_chain_files and smtpd_tls_protocols): 220, then the
  handshake within smtpd_starttls_timeout on the session's `ClientSession.handshake`; a failed
  one ends the session. AUTH (smtpd_sasl_auth_enable; passwords through
  sealmail.auth.Authenticator, service "smtp", with the store's imapd.conf named by
  smtpd_sasl_imapd_conf).

DSN (RFC 3461): RET/ENVID on MAIL and NOTIFY/ORCPT on RCPT are checked by the SMTP core, kept in
the queue and honoured by the bounce. SMTPUTF8 (RFC 6531, smtputf8_enable): offered by the core,
which refuses an undeclared UTF-8 address; the declaration is kept in the queue file.

Logs are Postfix's lines: `connect from`, `NOQUEUE: reject: RCPT from ...`, `QUEUEID: client=`,
`SSL_accept error from`, `Anonymous TLS connection established from`, `disconnect from`. A
session with errors of a class notify_classes names ends with its transcript queued for the
postmaster (sealmail.mta.smtpd_notice).

The package, by responsibility: `settings` (main.cf read once), `service` (one master.cf entry:
listeners and what its sessions share), `session` (connect to disconnect: greeting, command
loop, dispatch) over `state` (what the parts share), `auth` (AUTH), `tls` (STARTTLS and
wrappermode), `transaction` (MAIL, RCPT, DATA, the queue handoff), `worker` (a master's smtpd
process). The names below are the public ones.
"""

from __future__ import annotations

from sealmail.mta.smtpd.auth import MAX_AUTH_FAILURES, SASL_SERVICE, PostfixSaslExchange
from sealmail.mta.smtpd.service import SmtpdService, serve_sockets
from sealmail.mta.smtpd.session import SmtpdSession
from sealmail.mta.smtpd.settings import SmtpdSettings, authenticator_from_config
from sealmail.mta.smtpd.transaction import dsn_notify
from sealmail.mta.smtpd.worker import QueueManagerNudge, serve_worker, worker_main

__all__ = [
    "MAX_AUTH_FAILURES",
    "SASL_SERVICE",
    "PostfixSaslExchange",
    "QueueManagerNudge",
    "SmtpdService",
    "SmtpdSession",
    "SmtpdSettings",
    "authenticator_from_config",
    "dsn_notify",
    "serve_sockets",
    "serve_worker",
    "worker_main",
]
