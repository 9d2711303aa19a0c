"""RFC 6609: include (personal and global scripts), return, and global variables.

Included scripts are fetched through the host's loader and compiled (through the cache) when the
include runs; section 3.2: a missing script is a runtime error unless :optional, a script already
included with :once is skipped, and an include loop is a runtime error.
"""

from __future__ import annotations

from typing import Literal

from sealmail.sieve._interpreter import Interpreter, ReturnFromScript
from sealmail.sieve._spec import ArgKind, Call, CheckScope, Signature, Tag
from sealmail.sieve.errors import SieveCompileError


def _include(interp: Interpreter, call: Call) -> None:
    from sealmail.sieve._compiler import DEFAULT_CACHE  # cycle: the compiler imports registry

    run = interp.run
    location: Literal["personal", "global"] = (
        "global" if call.option_string("location") == ":global" else "personal")
    name = interp.string(call, 0)
    if not name or "/" in name or "\x00" in name:
        raise interp.fail(f"include: invalid script name {name!r}", call)
    key = (location, name)
    if call.has(":once") and key in run.included_once:
        return
    if key in run.include_stack:
        raise interp.fail(f"include loop: {location} script '{name}' includes itself", call)
    if len(run.include_stack) >= run.limits.max_include_depth:
        raise interp.fail(f"includes nested deeper than {run.limits.max_include_depth}", call)
    loader = run.context.include_loader
    text = loader(location, name) if loader is not None else None
    if text is None:
        if call.has(":optional"):
            return
        raise interp.fail(f"include: {location} script '{name}' does not exist", call)
    try:
        script = DEFAULT_CACHE.compile(text, extensions=interp.script.extensions,
                                       limits=run.limits)
    except SieveCompileError as exc:
        raise interp.fail(f"include: {location} script '{name}' does not compile: {exc}",
                          call) from exc
    run.included_once.add(key)
    run.include_stack.append(key)
    try:
        child = Interpreter(script, run)
        child.execute()
    finally:
        run.include_stack.pop()


def _check_include(call: Call, scope: CheckScope) -> None:
    name = call.arg_string(0)
    if "${" in name and "variables" in scope.requires:
        return
    if not name or "/" in name or "\x00" in name:
        scope.error(call, f"include: invalid script name {name!r}")


def _return(interp: Interpreter, call: Call) -> None:
    raise ReturnFromScript


def _global(interp: Interpreter, call: Call) -> None:
    for name in call.arg_strings(0):
        interp.global_names.add(name.lower())
        interp.variables.pop(name.lower(), None)


def _check_global(call: Call, scope: CheckScope) -> None:
    from sealmail.sieve._extensions.variables import VARIABLE_NAME

    if "variables" not in scope.requires:
        scope.error(call, 'global: needs require "variables"')
    for name in call.arg_strings(0):
        if not VARIABLE_NAME.match(name):
            scope.error(call, f"global: invalid variable name '{name}'")


SIGNATURES = (
    Signature("include", "include",
              tags=(Tag(":personal", group="location"), Tag(":global", group="location"),
                    Tag(":once"), Tag(":optional")),
              positional=(ArgKind.STRING,), check=_check_include, run_command=_include),
    Signature("return", "include", run_command=_return),
    Signature("global", "include", positional=(ArgKind.STRINGLIST,), check=_check_global,
              run_command=_global),
)
