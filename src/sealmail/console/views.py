"""What each console page shows, built from the queue, the logs and the store by the code the
command line uses for the same question: the queue as `postqueue -p` reads it, a message's path
as `sealmail trace` finds it (sealmail.cli.trace), quotas as `sealmail quota` reports them
(store_report.py, read by the store helper as the store's account), failed logins and activity
from the daemons' logs (logs.py).

Each view takes the console, the request and the session and returns (title, HTML content);
the app wraps it in the page. They run in a worker thread.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sealmail.console import pages
from sealmail.console.logs import (
    activity,
    auth_failures,
    failures_by_client,
    read_tail,
)
from sealmail.console.queue_actions import queue_rows
from sealmail.console.svg import bar_chart, line_chart

if TYPE_CHECKING:
    from sealmail.config.imapd_conf import ImapdConfig
    from sealmail.console.app import Console
    from sealmail.console.sessions import Session
    from sealmail.server.http import Request

AUTH_FAILURES_SHOWN = 200


@dataclass(frozen=True)
class Sources:
    """Where the console looks: the MTA's config directory and maillog, the store's imapd.conf
    and the files holding the store's log lines (as `sealmail trace -c -C -L --maillog`)."""

    config: ImapdConfig
    config_path: str
    mta_dir: str | None
    store_logs: tuple[str, ...] = ()
    maillog: str | None = None

    def trace_args(self, wanted: str = "") -> argparse.Namespace:
        return argparse.Namespace(mta_dir=self.mta_dir, config=self.config_path,
                                  store_logs=list(self.store_logs), maillog=self.maillog,
                                  id=wanted)

    def maillog_path(self) -> Path:
        from sealmail.cli.trace import mta_log_path

        return mta_log_path(self.trace_args())

    def store_log_paths(self) -> list[Path]:
        from sealmail.cli.trace import store_log_paths

        return store_log_paths(self.trace_args())


def queue_view(console: Console, request: Request, session: Session) -> tuple[str, str]:
    needle = request.query.get("q", "")[:200]
    rows, total = queue_rows(console.queue, needle)
    return "Queue", pages.queue_page(rows, total, needle, session.csrf)


def trace_view(console: Console, request: Request, session: Session) -> tuple[str, str]:
    from sealmail.cli.trace import parse_mta_log, parse_store_log, summary, trace

    wanted = request.query.get("id", "").strip()[:300]
    if not wanted:
        return "Trace", pages.trace_page("", [], [])
    maillog = console.sources.maillog_path()
    if not maillog.is_file():
        return "Trace", pages.trace_page(wanted, [], [], f"{maillog}: no such file")
    store = [line for path in console.sources.store_log_paths()
             for line in parse_store_log(read_tail(path))]
    year = store[0].when.year if store else datetime.now().year
    found = trace(wanted, list(parse_mta_log(read_tail(maillog), year)), store)
    if not found:
        return "Trace", pages.trace_page(wanted, [], [], f"{wanted}: not in {maillog}")
    return f"Trace of {wanted}", pages.trace_page(
        wanted, [line.render() for line in found], summary(found))


def users_view(console: Console, request: Request, session: Session) -> tuple[str, str]:
    """Read by the store helper, which runs as the store's account (store_helper.py)."""
    title = "Users and quotas"
    found = console.store.report()
    if "users" not in found:
        return title, f'<p class="flash error">{pages.e(found.get("error", "no answer"))}</p>'

    def kib(value: object) -> str:
        return "" if value is None else f"{value} KiB"

    rows = [(user, inbox, exists, kib(used), kib(limit), "" if messages is None else messages)
            for user, inbox, exists, used, limit, messages in found["users"]]
    content = pages.table(rows, ("User", "INBOX", "Messages", "Used", "Storage limit",
                                 "Message limit"), "users")
    content += "<h2>Quota roots (sealmail quota)</h2><pre id=quota>"
    content += pages.e("\n".join(found["quota"])) + "</pre>"
    if found["sasl"] is not None:
        content += "<h2>SASL users (sasldb)</h2>" + pages.table(
            found["sasl"], ("User", "Secrets"), "sasl")
    return title, content


def auth_view(console: Console, request: Request, session: Session) -> tuple[str, str]:
    now = datetime.now()
    paths = [console.sources.maillog_path(), *console.sources.store_log_paths()]
    failures = [f for path in dict.fromkeys(paths) for f in auth_failures(read_tail(path), now)]
    failures.sort(key=lambda failure: failure.when)
    recent = failures[-AUTH_FAILURES_SHOWN:][::-1]
    content = "<h2>By client</h2>" + pages.table(failures_by_client(failures),
                                                 ("Client", "Failures"), "by-client")
    content += f"<h2>The last {len(recent)}</h2>" + pages.table(
        ((f"{f.when:%Y-%m-%d %H:%M:%S}", f.program, f.client, f.user, f.mechanism, f.reason)
         for f in recent), ("Time", "Program", "Client", "User", "Mechanism", "Reason"),
        "failures")
    content += "<p>From " + ", ".join(pages.e(p) for p in dict.fromkeys(paths)) + "</p>"
    return "Recent authentication failures", content


def activity_view(console: Console, request: Request, session: Session) -> tuple[str, str]:
    from sealmail.cli.trace import parse_mta_log

    text = request.query.get("hours", "6")
    hours = min(int(text), 168) if text.isdigit() and int(text) > 0 else 6
    now = datetime.now()
    maillog = console.sources.maillog_path()
    seen = activity(parse_mta_log(read_tail(maillog), now.year), now, hours)
    buckets = range(len(seen.queue))
    charts = [
        bar_chart(f"Deliveries per {seen.step.seconds // 60} minutes",
                  [seen.label(i) for i in buckets],
                  [("sent", seen.delivered, "#2a7"), ("deferred", seen.deferred, "#d80"),
                   ("bounced", seen.bounced, "#c33")]),
        line_chart("Messages in the queue (at the end of each interval)",
                   [seen.label(i + 1) for i in buckets], [("queue", seen.queue, "#36c")]),
    ]
    choices = " ".join(f'<a href="/activity?hours={h}">{h} h</a>' for h in (1, 6, 24, 72))
    totals = (f"<p id=totals>Last {hours} h: {sum(seen.delivered)} sent, "
              f"{sum(seen.deferred)} deferred, {sum(seen.bounced)} bounced "
              f"(from {pages.e(maillog)})</p>")
    return "Activity", f"<p>{choices}</p>{totals}" + "".join(
        f"<div id=chart-{i}>{chart}</div>" for i, chart in enumerate(charts))
