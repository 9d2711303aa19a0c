"""`sealmail sieve-test`: what a delivery would do with a Sieve script, without delivering.

Like Pigeonhole's sieve-test(1): SCRIPT runs against MESSAGE with the given envelope, and the
actions are printed, for people or (`--json`) as one JSON list whose format is a contract:
actions, or a single `{"error": "compile", "line": N}` / `{"error": "runtime"}` object.
`-e` is accepted for compatibility: sealmail's sieve-test never stores, sends or records anything.
`--mailbox NAME` (repeatable) names the folders that exist; without it every folder counts as
existing. Exit status: 0 when the script ran, 1 on a compile error, 2 on a runtime error (the
implicit keep applies), 66 when SCRIPT or MESSAGE cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from sealmail.sieve import (
    Action,
    Discard,
    Envelope,
    Ereject,
    FileInto,
    Keep,
    Notify,
    Redirect,
    Reject,
    SieveCompileError,
    SieveContext,
    SieveResult,
    Vacation,
    compile_script,
)
from sealmail.sieve import run as run_script
from sealmail.sieve.context import IncludeLocation

DEFAULT_SENDER = "sender@example.com"
DEFAULT_RECIPIENT = "recipient@example.com"
EX_NOINPUT = 66


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-e", dest="execute", action="store_true",
                        help="accepted for Pigeonhole compatibility; nothing is ever delivered")
    parser.add_argument("-f", dest="sender", metavar="ENVELOPE_FROM", default=None,
                        help=f"envelope sender ('' is the null sender; default {DEFAULT_SENDER})")
    parser.add_argument("-r", dest="recipient", metavar="ENVELOPE_TO", default=None,
                        help=f"envelope recipient (default {DEFAULT_RECIPIENT})")
    parser.add_argument("--mailbox", dest="mailboxes", metavar="NAME", action="append",
                        default=None, help="a folder that exists (repeat for more)")
    parser.add_argument("--include-dir", dest="include_dirs", metavar="personal=DIR|global=DIR",
                        action="append", default=[],
                        help="where include :personal / :global scripts are found")
    parser.add_argument("--json", action="store_true", help="print one JSON list")
    parser.add_argument("script", metavar="SCRIPT")
    parser.add_argument("message", metavar="MESSAGE")


def _include_dirs(specs: list[str]) -> dict[str, Path]:
    dirs: dict[str, Path] = {}
    for spec in specs:
        location, equals, directory = spec.partition("=")
        if not equals or location not in ("personal", "global") or not directory:
            raise SystemExit(f"sealmail sieve-test: --include-dir wants personal=DIR or "
                             f"global=DIR, not {spec!r}")
        dirs[location] = Path(directory)
    return dirs


def _loader(dirs: dict[str, Path]) -> Any:
    def load(location: IncludeLocation, name: str) -> str | None:
        directory = dirs.get(location)
        if directory is None:
            return None
        for candidate in (directory / f"{name}.sieve", directory / name):
            if candidate.is_file():
                return candidate.read_text(encoding="utf-8")
        return None

    return load


def _decode_script(data: bytes) -> str:
    """RFC 5228 section 2.1: scripts are UTF-8; a bad byte is a compile error at its line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        from sealmail.sieve import CompileProblem

        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        problem = CompileProblem(line, column, "script is not valid UTF-8")
        raise SieveCompileError([problem]) from None


def action_json(action: Action) -> dict[str, Any]:
    """One action in the `--json` contract's shape."""
    if isinstance(action, Keep):
        return {"action": "keep", "flags": list(action.flags)}
    if isinstance(action, FileInto):
        return {"action": "fileinto", "mailbox": action.mailbox, "flags": list(action.flags),
                "copy": action.copy, "create": action.create}
    if isinstance(action, Discard):
        return {"action": "discard"}
    if isinstance(action, Redirect):
        return {"action": "redirect", "address": action.address, "copy": action.copy}
    if isinstance(action, Reject):
        return {"action": "reject", "reason": action.reason}
    if isinstance(action, Ereject):
        return {"action": "ereject", "reason": action.reason}
    if isinstance(action, Vacation):
        out: dict[str, Any] = {"action": "vacation", "subject": action.subject,
                               "from": action.from_address, "seconds": action.seconds,
                               "mime": action.mime, "reason": action.reason}
        if action.handle is not None:
            out["handle"] = action.handle
        out["sent"] = action.sent
        out["to"] = action.to
        return out
    assert isinstance(action, Notify)
    return {"action": "notify", "method": action.method, "from": action.from_address,
            "importance": action.importance, "options": list(action.options),
            "message": action.message}


def _describe(action: Action) -> str:
    flags = f" (flags: {' '.join(action.flags)})" if isinstance(action, Keep | FileInto) \
        and action.flags else ""
    if isinstance(action, Keep):
        note = f" (folder {action.fallback_from!r} does not exist)" if action.fallback_from \
            else ""
        return f"store message in folder: INBOX{flags}{note}"
    if isinstance(action, FileInto):
        extra = "".join(f" [{word}]" for word, on in (("copy", action.copy),
                                                       ("create", action.create)) if on)
        return f"store message in folder: {action.mailbox}{flags}{extra}"
    if isinstance(action, Discard):
        return "discard message"
    if isinstance(action, Redirect):
        return f"redirect message to: {action.address}{' [copy]' if action.copy else ''}"
    if isinstance(action, Reject):
        return f"reject message: {action.reason}"
    if isinstance(action, Ereject):
        return f"reject message at the protocol level: {action.reason}"
    if isinstance(action, Vacation):
        verdict = f"sent to {action.to}" if action.sent else f"not sent: {action.why_not_sent}"
        return (f"send vacation message ({verdict}; once per {action.seconds} seconds)\n"
                f"    reason: {action.reason.strip()}")
    assert isinstance(action, Notify)
    return f"send notification: {action.method} ({action.message})"


def _print_plain(result: SieveResult) -> None:
    explicit = [a for a in result.actions if not (isinstance(a, Keep) and a.implicit)]
    implicit = [a for a in result.actions if isinstance(a, Keep) and a.implicit]
    print("Performed actions:")
    print()
    for action in explicit or []:
        print(f" * {_describe(action)}")
    if not explicit:
        print("  (none)")
    print()
    print("Implicit keep:")
    print()
    print(f" * {_describe(implicit[0])}" if implicit else "  (none)")


def run(args: argparse.Namespace) -> int:
    try:
        script_bytes = Path(args.script).read_bytes()
        message = Path(args.message).read_bytes()
    except OSError as exc:
        print(f"sealmail sieve-test: {exc}", file=sys.stderr)
        return EX_NOINPUT
    dirs = _include_dirs(args.include_dirs)
    try:
        script = compile_script(_decode_script(script_bytes))
    except SieveCompileError as exc:
        if args.json:
            print(json.dumps([{"error": "compile", "line": exc.line}]))
        for problem in exc.problems:
            print(f"sealmail sieve-test: {args.script}: {problem}", file=sys.stderr)
        return 1
    mailboxes = None if args.mailboxes is None else set(args.mailboxes)
    context = SieveContext(
        now=datetime.now().astimezone(),
        mailbox_exists=None if mailboxes is None else (
            lambda name: name.upper() == "INBOX" or name in mailboxes),
        include_loader=_loader(dirs),
        user_addresses=(),
    )
    sender = DEFAULT_SENDER if args.sender is None else args.sender.strip().strip("<>")
    recipient = DEFAULT_RECIPIENT if args.recipient is None else args.recipient.strip("<>")
    result = run_script(script, message, Envelope(sender, recipient), context)
    if result.error is not None:
        print(f"sealmail sieve-test: {args.script}: runtime error: {result.error}; "
              "the implicit keep applies", file=sys.stderr)
    if args.json:
        if result.error is not None:
            print(json.dumps([{"error": "runtime"}]))
        else:
            print(json.dumps([action_json(a) for a in result.actions]))
    else:
        _print_plain(result)
    return 2 if result.error is not None else 0

