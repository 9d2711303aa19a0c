"""Log record set-up shared by every sealmail program: the CLI's and the daemons' workers (the
MTA's smtpd worker is started by the master, not through the CLI)."""

from __future__ import annotations

import logging
from contextvars import ContextVar

# A master.cf service's own syslog_name (`-o syslog_name=postfix/submission`): set in the
# context of that service's sessions, so their lines read `postfix/submission/smtpd[pid]` as
# Postfix writes them; None: main.cf's syslog_name.
SERVICE_SYSLOG_NAME: ContextVar[str | None] = ContextVar("service_syslog_name", default=None)


def lean_log_records() -> None:
    """Log records without what sealmail's lines never show: the calling frame, thread and
    multiprocessing names (the logging HOWTO's optimizations; a busy smtpd logs four lines a
    message)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
