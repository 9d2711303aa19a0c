"""RFC 5429: reject (refuse with a DSN/MDN) and ereject (refuse at the protocol level)."""

from __future__ import annotations

from sealmail.sieve._interpreter import Interpreter
from sealmail.sieve._spec import ArgKind, Call, Signature
from sealmail.sieve.actions import Ereject, Reject


def _reject(interp: Interpreter, call: Call) -> None:
    interp.add_action(Reject(interp.string(call, 0)), cancels_keep=True)


def _ereject(interp: Interpreter, call: Call) -> None:
    interp.add_action(Ereject(interp.string(call, 0)), cancels_keep=True)


SIGNATURES = (
    Signature("reject", "reject", positional=(ArgKind.STRING,), run_command=_reject),
    Signature("ereject", "ereject", positional=(ArgKind.STRING,), run_command=_ereject),
)
