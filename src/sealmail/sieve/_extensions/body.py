"""RFC 5173: the body test with :raw, :content and :text transforms."""

from __future__ import annotations

from sealmail.sieve._interpreter import Interpreter
from sealmail.sieve._spec import MATCHING, ArgKind, Call, CheckScope, Signature, Tag


def _body(interp: Interpreter, call: Call) -> bool:
    transform = call.option_string("transform") or ":text"
    message = interp.run.message
    if transform == ":raw":
        values = [message.raw_body()]
    elif transform == ":content":
        types = tuple(interp.option_strings(call, ":content") or ())
        values = message.body_parts(types)
    else:
        values = message.body_parts(None)
    return interp.match(call, values, interp.strings(call, 0))


def _check_body(call: Call, scope: CheckScope) -> None:
    if call.option_string("match") == ":count":
        # RFC 5173 section 4: :count with body is not defined
        scope.error(call, "body test: :count cannot be used")


SIGNATURES = (
    Signature("body", "body",
              tags=(*MATCHING, Tag(":raw", group="transform"),
                    Tag(":content", ArgKind.STRINGLIST, group="transform"),
                    Tag(":text", group="transform")),
              positional=(ArgKind.STRINGLIST,), check=_check_body, run_test=_body),
)
