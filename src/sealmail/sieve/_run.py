"""`run`: one compiled script against one message and envelope, to a `SieveResult`."""

from __future__ import annotations

from dataclasses import dataclass

from sealmail.sieve._compiler import CompiledScript
from sealmail.sieve._interpreter import Interpreter, StopScript, _Run, finish
from sealmail.sieve._message import MessageView
from sealmail.sieve._regex import RegexError
from sealmail.sieve.actions import Action, DuplicateMark, Keep
from sealmail.sieve.context import Envelope, SieveContext, SieveLimits
from sealmail.sieve.errors import SieveRuntimeError


@dataclass(frozen=True, slots=True)
class SieveResult:
    """The actions to carry out, in order, and what the host must log and record.

    On a runtime error `actions` is the implicit keep alone and `error` says what failed
    (RFC 5228 section 2.10.6); `duplicate_marks` are to be stored once delivery succeeded.
    """

    actions: tuple[Action, ...]
    error: SieveRuntimeError | None = None
    duplicate_marks: tuple[DuplicateMark, ...] = ()

    @property
    def failed(self) -> bool:
        return self.error is not None


def run(
    script: CompiledScript,
    message: bytes,
    envelope: Envelope,
    context: SieveContext,
    limits: SieveLimits | None = None,
) -> SieveResult:
    """Run `script` on `message`; never raises for anything the script or message does."""
    state = _Run(MessageView(message), envelope, context, limits or SieveLimits())
    state.include_stack.append(("main", script.sha256))
    try:
        Interpreter(script, state).execute()
    except StopScript:
        pass
    except SieveRuntimeError as exc:
        return SieveResult((Keep(implicit=True),), exc)
    except (RegexError, RecursionError, ValueError, LookupError) as exc:
        return SieveResult((Keep(implicit=True),), SieveRuntimeError(f"script failed: {exc}"))
    except Exception as exc:  # a bug here must not lose the message: keep it and say why
        error = SieveRuntimeError(f"internal error in the Sieve interpreter: {exc!r}")
        return SieveResult((Keep(implicit=True),), error)
    return SieveResult(tuple(finish(state)), None, tuple(state.duplicate_marks))
