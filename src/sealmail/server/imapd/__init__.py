"""imapd: the asyncio driver around the sans-I/O IMAP core and the session logic.

Bytes in -> `sealmail.proto.imap.ServerConnection` events -> `sealmail.imap.ImapSession` (in a
worker thread, since the store blocks) -> responses out. This package only does what needs the
connection: the greeting and hosts.allow, STARTTLS and imaps, LOGIN and AUTHENTICATE, IDLE's
waiting (the mailbox is polled cheaply, one index row, by one timer for all idling sessions, so
an LMTP delivery is announced within `IDLE_POLL_INTERVAL`), COMPRESS=DEFLATE, the inactivity
timeout, and logging (one line per event, `SESSIONID: event`; never a password or message body).

- `service`: `ImapService` (one per listener kind: its config, store, executor, limits) and
  `build_service`, the contract `sealmail master` and the standalone daemon start it by;
- `connection`: `ImapConnection`, one client: the read -> feed -> events loop, the commands
  answered here (CAPABILITY, LOGOUT, STARTTLS, LOGIN, AUTHENTICATE, IDLE, COMPRESS) and the
  hand-off of every other command to `ImapSession`;
- `output`: how responses reach the socket (`ResponseWriter`): flushing the core's bytes,
  COMPRESS's deflate, and a command's worker thread writing to the socket itself;
- `idle`: `IdleWatch`, the one timer per service that looks at the mailboxes of the sessions in
  IDLE and wakes those with news;
- `threads`: the worker threads (`CommandThreads`) and the hop of a command there and back
  (`in_thread`).

What every daemon session shares comes from sealmail.server.session: who the client is and
hosts.allow, the TLS handshake (`ClientSession`), and the SASL exchange (`SaslExchange`: the
same mechanisms, failure delay, limits and log lines as pop3d, sieved, lmtpd and smtpd); this
package only says how IMAP answers each step (RFC 5530 codes, `SASL_REFUSALS`).
"""

from sealmail.server.imapd.connection import (
    BASE_CAPABILITIES,
    SASL_REFUSALS,
    ImapConnection,
    sasl_refusal,
)
from sealmail.server.imapd.output import INFLATED_PIECE, STREAM_BUFFER, _Deflate
from sealmail.server.imapd.service import (
    IDLE_POLL_INTERVAL,
    TIMEOUT_MINUTES,
    ImapService,
    build_service,
)

__all__ = [
    "BASE_CAPABILITIES",
    "IDLE_POLL_INTERVAL",
    "INFLATED_PIECE",
    "SASL_REFUSALS",
    "STREAM_BUFFER",
    "TIMEOUT_MINUTES",
    "ImapConnection",
    "ImapService",
    "_Deflate",
    "build_service",
    "sasl_refusal",
]
