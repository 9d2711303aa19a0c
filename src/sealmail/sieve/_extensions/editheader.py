"""RFC 5293: addheader and deleteheader. Received and Auto-Submitted are protected (section 6
lets a site refuse changes to fields other processing relies on): an attempt to change them is
ignored at run time, not a compile error (section 7: "the attempt MUST be silently ignored"), so a
script written for a server without the protection still loads."""

from __future__ import annotations

import re

from sealmail.sieve._interpreter import Interpreter
from sealmail.sieve._spec import MATCHING, ArgKind, Call, CheckScope, Signature, Tag

# RFC 5322 section 3.6.8: field-name = 1*ftext; ftext = %d33-57 / %d59-126
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")
PROTECTED = frozenset({"received", "auto-submitted"})


def _valid_value(value: str) -> bool:
    # Section 4: the value must not hold bare CR or LF; CRLF followed by WSP is folding
    stripped = re.sub(r"\r\n[ \t]", "", value)
    return "\r" not in stripped and "\n" not in stripped and "\x00" not in value


def _addheader(interp: Interpreter, call: Call) -> None:
    name = interp.string(call, 0)
    value = interp.string(call, 1)
    if not _FIELD_NAME.match(name) or not _valid_value(value):
        raise interp.fail(f"addheader: invalid header field {name!r}", call)
    if name.lower() in PROTECTED:
        return
    interp.run.message.add_header(name, value, last=call.has(":last"))


def _deleteheader(interp: Interpreter, call: Call) -> None:
    name = interp.string(call, 0)
    if name.lower() in PROTECTED or not _FIELD_NAME.match(name):
        return
    message = interp.run.message
    positions = message.positions(name)
    index = call.option_number(":index")
    if index is not None:
        if index < 1 or index > len(positions):
            return
        positions = [positions[-index] if call.has(":last") else positions[index - 1]]
    if len(call.args) > 1:
        patterns = interp.strings(call, 1)
        matcher = interp.matcher(call)
        positions = [p for p in positions
                     if matcher.first_match([_decoded(message.headers[p][1])], patterns)[0]]
    message.delete_header(positions)


def _decoded(raw: str) -> str:
    from sealmail.sieve._message import decode_header_value

    return decode_header_value(raw)


def _check(call: Call, scope: CheckScope) -> None:
    name = call.arg_string(0)
    if "${" in name and "variables" in scope.requires:
        return
    if not _FIELD_NAME.match(name):
        scope.error(call, f"{call.name}: invalid header field name '{name}'")
    if call.name == "addheader" and not _valid_value(call.arg_string(1)):
        scope.error(call, "addheader: the value holds a bare CR or LF")
    if call.name == "deleteheader" and call.has(":last") and not call.has(":index"):
        scope.error(call, "deleteheader: :last needs :index")


SIGNATURES = (
    Signature("addheader", "editheader", tags=(Tag(":last"),),
              positional=(ArgKind.STRING, ArgKind.STRING), check=_check, run_command=_addheader),
    Signature("deleteheader", "editheader",
              tags=(*MATCHING, Tag(":index", ArgKind.NUMBER), Tag(":last")),
              positional=(ArgKind.STRING, ArgKind.STRINGLIST), check=_check,
              run_command=_deleteheader),
)
# deleteheader's value-patterns are optional
OPTIONAL_LAST = frozenset({"deleteheader"})
