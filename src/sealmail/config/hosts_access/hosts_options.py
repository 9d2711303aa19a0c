"""A rule's options (hosts_options(5)): ALLOW and DENY decide; twist refuses, spawn is not run.

Every other option is accepted and ignored; the rule reports it as a warning.
"""

from __future__ import annotations

import re

from sealmail.config.hosts_access.pattern_syntax import _PatternError

# hosts_options(5): the option name, and whether it takes a value (True), must not (False), or may.
_OPTION_VALUES: dict[str, bool | None] = {
    "allow": False,
    "deny": False,
    "twist": True,
    "spawn": True,
    "keepalive": False,
    "linger": True,
    "rfc931": None,
    "banners": True,
    "nice": None,
    "setenv": True,
    "umask": True,
    "user": True,
    "group": True,
    "severity": True,
}
# hosts_options(5): "These options must appear at the end of a rule."
_LAST_OPTIONS = frozenset({"allow", "deny", "twist"})


def _split_options(text: str) -> list[str]:
    r"""Options are separated by ``:``; ``\:`` keeps a colon inside a value."""
    options: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and text[index + 1 : index + 2] == ":":
            current.append(":")
            index += 2
            continue
        if char == ":":
            options.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    options.append("".join(current))
    return options


def _parse_options(text: str) -> tuple[bool | None, list[str]]:
    """The rule's decision (True ALLOW, False DENY or twist, None none) and the ignored options."""
    decision: bool | None = None
    ignored: list[str] = []
    options = _split_options(text)
    for position, raw in enumerate(options):
        option = raw.strip()
        match = re.match(r"([^\s=]*)\s*(?:=\s*)?(.*)", option, re.DOTALL)
        assert match is not None
        name, value = match.group(1).lower(), match.group(2).strip()
        if not name:
            raise _PatternError("missing option name")
        if name not in _OPTION_VALUES:
            raise _PatternError(f"unknown option {match.group(1)!r}")
        takes = _OPTION_VALUES[name]
        if takes is False and value:
            raise _PatternError(f"option {name!r} takes no value")
        if takes is True and not value:
            raise _PatternError(f"option {name!r} needs a value")
        if name in _LAST_OPTIONS and position != len(options) - 1:
            raise _PatternError(f"option {name!r} must be the last field of the rule")
        if name == "allow":
            decision = True
        elif name in ("deny", "twist"):
            decision = False
            if name == "twist":
                ignored.append("twist (not run; the client is refused)")
        elif name == "spawn":
            ignored.append("spawn (not run)")
        else:
            ignored.append(name)
    return decision, ignored
