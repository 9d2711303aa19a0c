"""The console's HTML: plain server-rendered pages, every value escaped, forms for every action
(each with its CSRF token), no script at all. The style sheet is inline and allowed by its hash
in the Content-Security-Policy, so the policy allows nothing else."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterable, Sequence
from html import escape

from sealmail.console.queue_actions import QueueRow, age

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f3a5f;color:#fff;padding:8px 16px;display:flex;gap:18px;align-items:center}
header a{color:#fff;text-decoration:none}header a.here{font-weight:bold;text-decoration:underline}
header form{margin-left:auto}main{padding:12px 16px}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:3px 6px;
vertical-align:top;text-align:left}th{background:#eef}
.reason{color:#a40;font-size:12px}.mono,pre{font-family:ui-monospace,monospace;font-size:12px}
.flash{padding:6px 10px;margin:8px 0;border:1px solid #9c9;background:#efe}
.error{border-color:#c99;background:#fee}form.inline{display:inline}
.chart{background:#fff;border:1px solid #ddd;margin:6px 0}.chart text{font-size:11px}
.chart .title{font-size:13px;font-weight:bold}
.login{max-width:320px;margin:60px auto;background:#fff;padding:16px;border:1px solid #ddd}
.login input{width:100%;margin:4px 0 10px}
"""
CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
SECTIONS = (("/queue", "Queue"), ("/trace", "Trace"), ("/users", "Users and quotas"),
            ("/auth", "Auth failures"), ("/activity", "Activity"))


def e(value: object) -> str:
    return escape(str(value), quote=True)


def document(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{e(title)} - sealmail console</title><style>{CSS}</style></head>"
            f"<body>{body}</body></html>")


def page(title: str, here: str, user: str, csrf: str, content: str,
         flash: tuple[bool, str] | None = None) -> str:
    links = "".join(f'<a href="{path}"{" class=here" if path == here else ""}>{e(name)}</a>'
                    for path, name in SECTIONS)
    note = ""
    if flash is not None:
        ok, text = flash
        note = f'<p class="flash{"" if ok else " error"}" id="flash">{e(text)}</p>'
    return document(title, (
        f"<header><strong>sealmail</strong>{links}<form method=post action=/logout>"
        f"{hidden(csrf)}<span>{e(user)}</span> <button id=logout>Log out</button></form></header>"
        f"<main><h1>{e(title)}</h1>{note}{content}</main>"))


def hidden(csrf: str) -> str:
    return f'<input type=hidden name=csrf value="{e(csrf)}">'


def login_page(csrf: str, error: str = "") -> str:
    problem = f'<p class="flash error" id=flash>{e(error)}</p>' if error else ""
    return document("Log in", (
        f'<form class=login method=post action=/login><h1>sealmail console</h1>{problem}'
        f"{hidden(csrf)}<label>User <input name=user id=user autocomplete=username required>"
        "</label><label>Password <input name=password id=password type=password "
        "autocomplete=current-password required></label><button id=login>Log in</button>"
        "</form>"))


def when(seconds: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S", time.localtime(seconds))


def queue_page(rows: Sequence[QueueRow], total: int, needle: str, csrf: str) -> str:
    search = (f'<form method=get action=/queue><input name=q id=q value="{e(needle)}" '
              'placeholder="queue id, sender, recipient or Message-ID" size=50> '
              "<button id=search>Search</button></form>"
              f"<form method=post action=/queue/flush class=inline>{hidden(csrf)}"
              "<button id=flush>Flush queue (postqueue -f)</button></form>")
    if not rows:
        return search + "<p id=empty>" + ("No message matches." if needle else
                                           "Mail queue is empty") + "</p>"
    shown = f"<p>{total} message{'s' if total != 1 else ''}" + (
        f", the first {len(rows)} shown" if total > len(rows) else "") + "</p>"
    head = ("<tr><th>Queue ID</th><th>Queue</th><th>Size</th><th>Arrival</th><th>Sender</th>"
            "<th>Recipients (last reason)</th><th>Next try</th><th>Actions</th></tr>")
    body = "".join(_queue_row(row, needle, csrf) for row in rows)
    return f"{search}{shown}<table id=queue>{head}{body}</table>"


def _queue_row(row: QueueRow, needle: str, csrf: str) -> str:
    recipients = "<br>".join(
        e(address) + (f'<div class=reason>{e(reason)}</div>' if reason else "")
        for address, reason in row.recipients)
    actions = {"incoming": ("retry", "hold", "delete"), "active": ("hold", "delete"),
               "deferred": ("retry", "hold", "delete"), "hold": ("release", "delete")}
    buttons = "".join(
        f"<form method=post action=/queue/action class=inline>{hidden(csrf)}"
        f'<input type=hidden name=id value="{e(row.queue_id)}">'
        f'<input type=hidden name=q value="{e(needle)}">'
        f'<button name=action value={name} id="{name}-{e(row.queue_id)}">{name.title()}'
        "</button></form> "
        for name in actions.get(row.queue, ()))
    nxt = age(row.next_attempt) if row.next_attempt is not None else ""
    return (f'<tr id="row-{e(row.queue_id)}" data-queue="{e(row.queue)}">'
            f'<td class=mono><a href="/trace?id={e(row.queue_id)}">{e(row.queue_id)}</a></td>'
            f"<td>{e(row.queue)}</td><td>{row.size}</td><td>{e(when(row.arrival))}</td>"
            f"<td>{e(row.sender)}</td><td>{recipients}</td><td>{e(nxt)}</td>"
            f"<td>{buttons}</td></tr>")


def trace_page(wanted: str, lines: Iterable[str], summary: Iterable[str],
               problem: str = "") -> str:
    form = (f'<form method=get action=/trace><input name=id id=trace-id value="{e(wanted)}" '
            'placeholder="queue id or Message-ID" size=50> <button id=trace>Trace</button></form>')
    if problem:
        return form + f'<p class="flash error" id=flash>{e(problem)}</p>'
    if not wanted:
        return form
    text = "\n".join(lines)
    results = "".join(f"<li>{e(line)}</li>" for line in summary)
    return (form + f"<h2>Where it went</h2><ul id=summary>{results or '<li>not delivered yet</li>'}"
            f"</ul><h2>Log lines (MTA and store)</h2><pre id=lines>{e(text)}</pre>")


def table(rows: Iterable[Sequence[object]], head: Sequence[str], ident: str) -> str:
    header = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table id={ident}><tr>{header}</tr>{body}</table>"
