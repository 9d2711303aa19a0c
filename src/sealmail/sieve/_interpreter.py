"""Running a compiled script against one message: the walk, the variables, and the result.

Theory of operation. A run (`_Run`) owns what every script of one delivery shares: the message
view with its header edits, the actions taken so far, whether the implicit keep still stands, the
imap4flags internal variable, the global variables of include (RFC 6609 section 3.4), the counters
the limits bound. An `Interpreter` runs one script (the main one or an included one) with its own
local variables and match variables. Commands and tests are looked up in the registry built from
the extension modules; the validator already checked every signature, so a runner only reads its
arguments. `stop` and `return` unwind as exceptions. Any `SieveRuntimeError` ends the run and the
host gets the implicit keep alone (RFC 5228 section 2.10.6), never a half-done set of actions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sealmail.sieve._match import Matcher
from sealmail.sieve._message import Address, MessageView
from sealmail.sieve._regex import RegexError
from sealmail.sieve._spec import Call
from sealmail.sieve.actions import (
    Action,
    Discard,
    DuplicateMark,
    Ereject,
    FileInto,
    Keep,
    Notify,
    Redirect,
    Reject,
    Vacation,
)
from sealmail.sieve.context import Envelope, SieveContext, SieveLimits
from sealmail.sieve.errors import SieveRuntimeError

if TYPE_CHECKING:
    from sealmail.sieve._compiler import CompiledScript

# RFC 5229 section 3: variable-ref = "${" [namespace] variable-name "}"; identifiers or digits.
_VARIABLE_REF = re.compile(
    r"\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*|[0-9]+)\}"
)


class StopScript(Exception):
    """`stop` (RFC 5228 section 3.3): ends every script of the run."""


class ReturnFromScript(Exception):
    """`return` (RFC 6609 section 3.3): ends the current script only."""


def normalise_flags(flags: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """RFC 5232 section 3: flags are space-separated and compared case-insensitively."""
    out: set[str] = set()
    for item in flags:
        out.update(word.lower() for word in item.split())
    return tuple(sorted(out))


@dataclass
class _Run:
    message: MessageView
    envelope: Envelope
    context: SieveContext
    limits: SieveLimits
    actions: list[Action] = field(default_factory=list)
    implicit_keep: bool = True
    flags: list[str] = field(default_factory=list)
    globals: dict[str, str] = field(default_factory=dict)
    include_stack: list[tuple[str, str]] = field(default_factory=list)
    included_once: set[tuple[str, str]] = field(default_factory=set)
    duplicate_marks: list[DuplicateMark] = field(default_factory=list)
    action_count: int = 0
    redirect_count: int = 0


class Interpreter:
    """Runs one script; `run` is the shared state of the delivery."""

    def __init__(self, script: CompiledScript, run: _Run) -> None:
        self.script = script
        self.run = run
        self.variables: dict[str, str] = {}
        self.global_names: set[str] = set()
        self.match_values: tuple[str, ...] = ()
        self.uses_variables = "variables" in script.requires
        self.current: Call | None = None

    # --- walking -----------------------------------------------------------------------------
    def execute(self) -> None:
        try:
            self.block(self.script.commands)
        except ReturnFromScript:
            return

    def block(self, commands: tuple[Call, ...]) -> None:
        branch_taken = True  # after a non-if command, elsif/else cannot appear (validated)
        for call in commands:
            name = call.name
            if name == "if":
                branch_taken = self.test(call.tests[0])
                if branch_taken:
                    self.block(call.block or ())
                continue
            if name in ("elsif", "else"):
                if branch_taken:
                    continue
                branch_taken = name == "else" or self.test(call.tests[0])
                if branch_taken:
                    self.block(call.block or ())
                continue
            self.current = call
            signature = self.script.registry.commands[name]
            assert signature.run_command is not None
            signature.run_command(self, call)

    def test(self, call: Call) -> bool:
        signature = self.script.registry.tests[call.name]
        assert signature.run_test is not None
        self.current = call
        return signature.run_test(self, call)

    def fail(self, message: str, call: Call | None = None) -> SieveRuntimeError:
        where = call or self.current
        if where is None:
            return SieveRuntimeError(message)
        return SieveRuntimeError(message, where.line, where.column)

    # --- strings and variables (RFC 5229) ----------------------------------------------------
    def expand(self, value: str) -> str:
        if not self.uses_variables or "${" not in value:
            return value
        expanded = _VARIABLE_REF.sub(self._lookup, value)
        return expanded[: self.run.limits.max_variable_size * 4]

    def _lookup(self, found: re.Match[str]) -> str:
        name = found.group(1)
        if name.isdigit():
            index = int(name)
            return self.match_values[index] if index < len(self.match_values) else ""
        return self.get_variable(name) or ""

    def get_variable(self, name: str) -> str | None:
        key = name.lower()
        if key.startswith("global."):
            return self.run.globals.get(key[len("global."):])
        if key in self.global_names:
            return self.run.globals.get(key)
        return self.variables.get(key)

    def set_variable(self, name: str, value: str) -> None:
        key = name.lower()
        value = value[: self.run.limits.max_variable_size]
        if key.startswith("global."):
            self.run.globals[key[len("global."):]] = value
            return
        target = self.run.globals if key in self.global_names else self.variables
        if key not in target and len(target) >= self.run.limits.max_variables:
            raise self.fail(f"more than {self.run.limits.max_variables} variables")
        target[key] = value

    def string(self, call: Call, index: int) -> str:
        return self.expand(call.arg_string(index))

    def strings(self, call: Call, index: int) -> list[str]:
        return [self.expand(s) for s in call.arg_strings(index)]

    def option_string(self, call: Call, key: str) -> str | None:
        value = call.option_string(key)
        return None if value is None else self.expand(value)

    def option_strings(self, call: Call, key: str) -> list[str] | None:
        value = call.option_strings(key)
        return None if value is None else [self.expand(s) for s in value]

    # --- matching ----------------------------------------------------------------------------
    def matcher(self, call: Call) -> Matcher:
        match = call.option_string("match") or ":is"
        relation = call.option_string(match) if match in (":count", ":value") else None
        return Matcher(
            comparator=(call.option_string(":comparator") or "i;ascii-casemap").lower(),
            match=match,
            relation=None if relation is None else self.expand(relation).lower(),
            max_regex_program=self.run.limits.max_regex_program,
            max_regex_steps=self.run.limits.max_regex_steps,
        )

    def match(self, call: Call, values: list[str], keys: list[str]) -> bool:
        """Compare values with keys as the call's match type says; set match variables."""
        matcher = self.matcher(call)
        if len(values) > self.run.limits.max_match_values:
            values = values[: self.run.limits.max_match_values]
        try:
            found, groups = matcher.first_match(values, keys)
        except RegexError as exc:
            raise self.fail(str(exc), call) from exc
        # RFC 5229 section 3.2: match variables change only when a :matches/:regex test succeeds
        if found and groups is not None and self.uses_variables:
            self.match_values = groups
        return found

    def address_part(self, call: Call, address: Address) -> str | None:
        """RFC 5228 section 2.7.4 and RFC 5233: the part of `address` a test compares."""
        part = call.option_string("address-part") or ":all"
        if part == ":all":
            return address.full
        if part == ":localpart":
            return address.local
        if part == ":domain":
            return address.domain
        delimiter = self.run.context.subaddress_delimiter
        if not delimiter or delimiter not in address.local:
            return address.local if part == ":user" else None
        user, _, detail = address.local.partition(delimiter)
        return user if part == ":user" else detail

    # --- actions -----------------------------------------------------------------------------
    def message_copy(self) -> bytes | None:
        return self.run.message.render() if self.run.message.edited else None

    def count_action(self) -> None:
        self.run.action_count += 1
        if self.run.action_count > self.run.limits.max_actions:
            raise self.fail(f"more than {self.run.limits.max_actions} actions")

    def add_action(self, action: Action, cancels_keep: bool) -> None:
        """Record an action, merging duplicates (RFC 5228 section 4.2, 4.3, RFC 5232 section 5)
        and refusing the combinations RFC 5429 section 2 and RFC 5230 section 4.7 forbid."""
        self.count_action()
        run = self.run
        rejecting = any(isinstance(a, Reject | Ereject) for a in run.actions)
        if isinstance(action, Reject | Ereject):
            conflicts = [a for a in run.actions
                         if isinstance(a, Keep | FileInto | Vacation | Reject | Ereject)
                         or (isinstance(a, Redirect) and not a.copy)]
            if conflicts:
                raise self.fail(f"{_action_name(action)} conflicts with an earlier "
                                f"{_action_name(conflicts[0])} action")
        elif (rejecting and isinstance(action, Keep | FileInto | Vacation)) or (
            rejecting and isinstance(action, Redirect) and not action.copy
        ):
            raise self.fail(f"{_action_name(action)} conflicts with an earlier reject action")
        if isinstance(action, Vacation) and any(isinstance(a, Vacation) for a in run.actions):
            raise self.fail("only one vacation action may run per message")
        if cancels_keep:
            run.implicit_keep = False
        for index, earlier in enumerate(run.actions):
            if isinstance(action, Keep) and isinstance(earlier, Keep):
                run.actions[index] = Keep(normalise_flags(earlier.flags + action.flags),
                                          message=action.message or earlier.message)
                return
            if (isinstance(action, FileInto) and isinstance(earlier, FileInto)
                    and earlier.mailbox == action.mailbox):
                run.actions[index] = FileInto(
                    earlier.mailbox, normalise_flags(earlier.flags + action.flags),
                    copy=earlier.copy and action.copy, create=earlier.create or action.create,
                    message=action.message or earlier.message)
                return
            if (isinstance(action, Redirect) and isinstance(earlier, Redirect)
                    and earlier.address.lower() == action.address.lower()):
                run.actions[index] = Redirect(earlier.address, earlier.copy and action.copy,
                                              action.message or earlier.message)
                return
            if isinstance(action, Discard) and isinstance(earlier, Discard):
                return
            if isinstance(action, Notify) and earlier == action:
                return
        if isinstance(action, Redirect):
            run.redirect_count += 1
            if run.redirect_count > run.limits.max_redirects:
                raise self.fail(f"more than {run.limits.max_redirects} redirects")
        run.actions.append(action)


def _action_name(action: Action) -> str:
    return type(action).__name__.lower()


def finish(run: _Run) -> list[Action]:
    """The final action list: the implicit keep (RFC 5228 section 2.10.2) and fileinto fallbacks."""
    actions: list[Action] = []
    exists = run.context.mailbox_exists
    for action in run.actions:
        if isinstance(action, FileInto) and not action.create and exists is not None \
                and not exists(action.mailbox):
            fallback = Keep(action.flags, message=action.message, fallback_from=action.mailbox)
            _merge_keep(actions, fallback)
            continue
        if isinstance(action, Keep):
            _merge_keep(actions, action)
            continue
        actions.append(action)
    if run.implicit_keep:
        _merge_keep(actions, Keep(normalise_flags(run.flags), implicit=True,
                                  message=run.message.render() if run.message.edited else None))
    return actions


def _merge_keep(actions: list[Action], keep: Keep) -> None:
    for index, earlier in enumerate(actions):
        if isinstance(earlier, Keep):
            actions[index] = Keep(normalise_flags(earlier.flags + keep.flags),
                                  implicit=earlier.implicit and keep.implicit,
                                  message=earlier.message or keep.message,
                                  fallback_from=earlier.fallback_from or keep.fallback_from)
            return
    actions.append(keep)
