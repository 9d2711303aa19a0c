"""RFC 5435 notify with the mailto method (RFC 5436), valid_notify_method and
notify_method_capability, and the :encodeurl modifier of set (section 7)."""

from __future__ import annotations

import urllib.parse

from sealmail.sieve._interpreter import Interpreter
from sealmail.sieve._message import parse_addresses
from sealmail.sieve._spec import MATCHING, ArgKind, Call, CheckScope, Signature, Tag
from sealmail.sieve.actions import Notify


def valid_mailto(uri: str) -> bool:
    """RFC 6068: "mailto:" with at least one valid address (in the path or a to= field)."""
    if not uri.lower().startswith("mailto:"):
        return False
    rest = uri[len("mailto:"):]
    path, _, query = rest.partition("?")
    recipients = [urllib.parse.unquote(p) for p in path.split(",") if p]
    for field in query.split("&") if query else ():
        name, _, value = field.partition("=")
        if name.lower() == "to":
            recipients += [urllib.parse.unquote(v) for v in value.split(",") if v]
    if not recipients:
        return False
    for recipient in recipients:
        found = parse_addresses(recipient)
        if len(found) != 1 or not found[0].domain or not found[0].local:
            return False
    return True


def _notify(interp: Interpreter, call: Call) -> None:
    method = interp.string(call, 0)
    if not valid_mailto(method):
        raise interp.fail(f"notify: unsupported or invalid method {method!r}", call)
    importance = interp.option_string(call, ":importance") or "2"
    if importance not in ("1", "2", "3"):
        raise interp.fail(f"notify: invalid importance {importance!r}", call)
    message = interp.option_string(call, ":message")
    if message is None:  # RFC 5436 section 2.7: a default built from From and Subject
        sender = (interp.run.message.values("from") or [""])[0]
        subject = (interp.run.message.values("subject") or [""])[0]
        message = f"{sender}: {subject}"
    interp.add_action(
        Notify(method, interp.option_string(call, ":from"), int(importance),
               tuple(interp.option_strings(call, ":options") or ()), message),
        cancels_keep=False,
    )


def _check_notify(call: Call, scope: CheckScope) -> None:
    method = call.arg_string(0)
    if "${" in method and "variables" in scope.requires:
        return
    if not valid_mailto(method):
        scope.error(call, f"notify: unsupported or invalid method '{method}'")
    importance = call.option_string(":importance")
    if importance is not None and importance not in ("1", "2", "3"):
        scope.error(call, f"notify: invalid importance '{importance}'")


def _valid_notify_method(interp: Interpreter, call: Call) -> bool:
    return all(valid_mailto(uri) for uri in interp.strings(call, 0))


def _notify_method_capability(interp: Interpreter, call: Call) -> bool:
    uri = interp.string(call, 0)
    capability = interp.string(call, 1).lower()
    if not valid_mailto(uri) or capability != "online":
        return False
    # Section 5: mailto cannot tell whether the recipient is online
    return interp.match(call, ["maybe"], interp.strings(call, 2))


SIGNATURES = (
    Signature("notify", "enotify",
              tags=(Tag(":from", ArgKind.STRING), Tag(":importance", ArgKind.STRING),
                    Tag(":options", ArgKind.STRINGLIST), Tag(":message", ArgKind.STRING)),
              positional=(ArgKind.STRING,), check=_check_notify, run_command=_notify),
    Signature("valid_notify_method", "enotify", positional=(ArgKind.STRINGLIST,),
              run_test=_valid_notify_method),
    Signature("notify_method_capability", "enotify", tags=MATCHING,
              positional=(ArgKind.STRING, ArgKind.STRING, ArgKind.STRINGLIST),
              run_test=_notify_method_capability),
)
