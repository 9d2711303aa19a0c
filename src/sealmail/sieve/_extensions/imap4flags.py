"""RFC 5232: setflag, addflag, removeflag and hasflag on the internal variable or a named one.

The flags a keep or fileinto stores are, unless it has :flags, the internal variable's value when
the action runs (section 5); the implicit keep takes its value when the script ends (section 3).
"""

from __future__ import annotations

from sealmail.sieve._interpreter import Interpreter, normalise_flags
from sealmail.sieve._spec import MATCHING, ArgKind, Call, CheckScope, Signature


def _split(call: Call) -> tuple[str | None, int]:
    """(variable name or None for the internal variable, index of the flag list)."""
    if len(call.args) == 2:
        return call.arg_string(0), 1
    return None, 0


def _current(interp: Interpreter, variable: str | None) -> list[str]:
    if variable is None:
        return list(interp.run.flags)
    return list(normalise_flags([interp.get_variable(variable) or ""]))


def _store(interp: Interpreter, variable: str | None, flags: list[str]) -> None:
    normal = list(normalise_flags(flags))
    if variable is None:
        interp.run.flags = normal
    else:
        interp.set_variable(variable, " ".join(normal))


def _setflag(interp: Interpreter, call: Call) -> None:
    variable, index = _split(call)
    _store(interp, variable, interp.strings(call, index))


def _addflag(interp: Interpreter, call: Call) -> None:
    variable, index = _split(call)
    _store(interp, variable, _current(interp, variable) + interp.strings(call, index))


def _removeflag(interp: Interpreter, call: Call) -> None:
    variable, index = _split(call)
    removed = set(normalise_flags(interp.strings(call, index)))
    _store(interp, variable, [f for f in _current(interp, variable) if f not in removed])


def _hasflag(interp: Interpreter, call: Call) -> bool:
    variables = interp.strings(call, 0) if len(call.args) == 2 else None
    keys = interp.strings(call, len(call.args) - 1)
    if variables is None:
        values = list(normalise_flags(interp.run.flags))
    else:
        values = list(normalise_flags([interp.get_variable(v) or "" for v in variables]))
    return interp.match(call, values, keys)


def _check_variable_form(call: Call, scope: CheckScope) -> None:
    if len(call.args) == 2 and "variables" not in scope.requires:
        scope.error(call, f"{call.name}: a variable name argument needs require \"variables\"")


SIGNATURES = (
    Signature("setflag", "imap4flags", positional=(ArgKind.STRING, ArgKind.STRINGLIST),
              check=_check_variable_form, run_command=_setflag),
    Signature("addflag", "imap4flags", positional=(ArgKind.STRING, ArgKind.STRINGLIST),
              check=_check_variable_form, run_command=_addflag),
    Signature("removeflag", "imap4flags", positional=(ArgKind.STRING, ArgKind.STRINGLIST),
              check=_check_variable_form, run_command=_removeflag),
    Signature("hasflag", "imap4flags", tags=MATCHING,
              positional=(ArgKind.STRINGLIST, ArgKind.STRINGLIST),
              check=_check_variable_form, run_test=_hasflag),
)
# setflag/addflag/removeflag/hasflag take an optional first argument; the validator accepts
# one fewer positional argument for the names listed here.
OPTIONAL_FIRST = frozenset({"setflag", "addflag", "removeflag", "hasflag"})
