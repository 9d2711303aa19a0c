"""RFC 5183: the environment test. The host fills the items it knows (domain, host, remote-host,
remote-ip...); name, version, location and phase have defaults."""

from __future__ import annotations

from sealmail import __version__
from sealmail.sieve._interpreter import Interpreter
from sealmail.sieve._spec import MATCHING, ArgKind, Call, Signature

DEFAULTS = {"name": "sealmail", "version": __version__, "location": "MDA", "phase": "during"}


def _environment(interp: Interpreter, call: Call) -> bool:
    name = interp.string(call, 0).lower()
    items = {**DEFAULTS, **{k.lower(): v for k, v in interp.run.context.environment.items()}}
    value = items.get(name)
    return interp.match(call, [] if value is None else [value], interp.strings(call, 1))


SIGNATURES = (
    Signature("environment", "environment", tags=MATCHING,
              positional=(ArgKind.STRING, ArgKind.STRINGLIST), run_test=_environment),
)
