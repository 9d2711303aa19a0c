"""RFC 5229: set with its modifiers, and the string test."""

from __future__ import annotations

import re
import urllib.parse

from sealmail.sieve._interpreter import Interpreter
from sealmail.sieve._spec import MATCHING, ArgKind, Call, CheckScope, Signature, Tag

# RFC 5229 section 4: variable-name = (ALPHA / "_") *(ALPHA / DIGIT / "_")
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_WILDCARD = re.compile(r"([*?\\])")

# Section 4.1: modifiers apply by precedence, highest first.
_MODIFIERS = (
    (40, ":lower"), (40, ":upper"), (30, ":lowerfirst"), (30, ":upperfirst"),
    (20, ":quotewildcard"), (15, ":encodeurl"), (10, ":length"),
)


def _apply(modifier: str, value: str) -> str:
    if modifier == ":lower":
        return value.lower()
    if modifier == ":upper":
        return value.upper()
    if modifier == ":lowerfirst":
        return value[:1].lower() + value[1:]
    if modifier == ":upperfirst":
        return value[:1].upper() + value[1:]
    if modifier == ":quotewildcard":
        return _WILDCARD.sub(r"\\\1", value)
    if modifier == ":encodeurl":  # RFC 5435 section 7: percent-encode all but unreserved
        return urllib.parse.quote(value, safe="-._~")
    return str(len(value))


def _set(interp: Interpreter, call: Call) -> None:
    value = interp.string(call, 1)
    for _, modifier in sorted(_MODIFIERS, key=lambda m: -m[0]):
        if call.has(modifier):
            value = _apply(modifier, value)
    interp.set_variable(call.arg_string(0), value)


def _check_set(call: Call, scope: CheckScope) -> None:
    name = call.arg_string(0)
    if name.lower().startswith("global.") and "include" in scope.requires:
        name = name[len("global."):]
    if not VARIABLE_NAME.match(name):
        scope.error(call, f"set: invalid variable name '{name}'")
    for precedence in (40, 30):
        chosen = [m for p, m in _MODIFIERS if p == precedence and call.has(m)]
        if len(chosen) > 1:
            scope.error(call, f"set: {' and '.join(chosen)} cannot be used together")


def _string(interp: Interpreter, call: Call) -> bool:
    sources = interp.strings(call, 0)
    # RFC 5229 section 5: for :count, empty strings do not count as values
    if call.option_string("match") == ":count":
        sources = [s for s in sources if s]
    return interp.match(call, sources, interp.strings(call, 1))


SIGNATURES = (
    Signature("set", "variables",
              tags=tuple(Tag(m, extension="enotify" if m == ":encodeurl" else None)
                         for _, m in _MODIFIERS),
              positional=(ArgKind.STRING, ArgKind.STRING), check=_check_set, run_command=_set),
    Signature("string", "variables", tags=MATCHING,
              positional=(ArgKind.STRINGLIST, ArgKind.STRINGLIST), run_test=_string),
)
