"""From script text to a `CompiledScript`: parse, then check every command and test against the
signatures the extension modules declare, collecting every problem with its line and column.

RFC 5228 section 3.2: `require` comes before any other command and names only known extensions;
a command, test or tag of an extension not required is an error (section 2.10.5). Encoded
characters (RFC 5228 section 2.4.2.4) are decoded here when "encoded-character" is required.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass, field

from sealmail.sieve._ast import Node, NumberArg, StringArg, TagArg
from sealmail.sieve._extensions import (
    body,
    core,
    date,
    duplicate,
    editheader,
    enotify,
    environment,
    imap4flags,
    include,
    mailbox,
    reject,
    vacation,
    variables,
)
from sealmail.sieve._match import COMPARATORS, RELATIONS, SUBSTRING_MATCHES, check_regex
from sealmail.sieve._parser import parse
from sealmail.sieve._spec import ArgKind, Call, CheckScope, Signature, Tag, Value
from sealmail.sieve.context import SieveLimits
from sealmail.sieve.errors import CompileProblem, SieveCompileError

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset({
    "fileinto", "reject", "ereject", "envelope", "encoded-character", "imap4flags", "copy",
    "body", "variables", "relational", "comparator-i;ascii-numeric", "comparator-i;octet",
    "comparator-i;ascii-casemap", "subaddress", "vacation", "vacation-seconds", "include",
    "date", "index", "mailbox", "duplicate", "editheader", "regex", "enotify", "environment",
})


@dataclass(frozen=True)
class Registry:
    commands: dict[str, Signature]
    tests: dict[str, Signature]


def _build_registry() -> Registry:
    commands: dict[str, Signature] = {}
    tests: dict[str, Signature] = {}
    for module in (core, reject, imap4flags, variables, body, vacation, include, date, mailbox,
                   duplicate, editheader, enotify, environment):
        for signature in module.SIGNATURES:
            target = tests if signature.run_test is not None else commands
            target[signature.name] = signature
    return Registry(commands, tests)


REGISTRY = _build_registry()
_OPTIONAL_FIRST = imap4flags.OPTIONAL_FIRST
_OPTIONAL_LAST = editheader.OPTIONAL_LAST


@dataclass(frozen=True)
class CompiledScript:
    """A checked script, ready to run any number of times; immutable and shareable."""

    commands: tuple[Call, ...]
    requires: frozenset[str]
    extensions: frozenset[str]
    sha256: str
    registry: Registry = field(repr=False, compare=False)


def compile_script(
    text: str,
    *,
    extensions: frozenset[str] | set[str] | None = None,
    limits: SieveLimits | None = None,
) -> CompiledScript:
    """Compile `text`; `extensions` limits what `require` may name (default: all supported).

    Raises SieveCompileError listing every problem, each with line and column.
    """
    limits = limits or SieveLimits()
    enabled = SUPPORTED_EXTENSIONS if extensions is None else frozenset(extensions)
    unknown = enabled - SUPPORTED_EXTENSIONS
    if unknown:
        raise ValueError(f"unsupported Sieve extensions: {', '.join(sorted(unknown))}")
    size = len(text.encode("utf-8", "surrogateescape"))
    if size > limits.max_script_size:
        raise SieveCompileError([CompileProblem(
            1, 1, f"script is {size} bytes, more than the limit of {limits.max_script_size}")])
    nodes = parse(text, limits.max_nesting)
    checker = _Checker(enabled, limits)
    commands = checker.script(nodes)
    if checker.problems:
        raise SieveCompileError(checker.problems)
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
    return CompiledScript(commands, frozenset(checker.requires), enabled, digest, REGISTRY)


class ScriptCache:
    """Compiled scripts keyed by the hash of their text (and the options that shaped them), so a
    script is compiled once and reused until it changes. Least recently used entries go first."""

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, frozenset[str], SieveLimits], CompiledScript] = (
            OrderedDict())
        self.hits = 0
        self.misses = 0

    def compile(
        self,
        text: str,
        *,
        extensions: frozenset[str] | set[str] | None = None,
        limits: SieveLimits | None = None,
    ) -> CompiledScript:
        limits = limits or SieveLimits()
        enabled = SUPPORTED_EXTENSIONS if extensions is None else frozenset(extensions)
        digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
        key = (digest, enabled, limits)
        found = self._entries.get(key)
        if found is not None:
            self.hits += 1
            self._entries.move_to_end(key)
            return found
        self.misses += 1
        script = compile_script(text, extensions=enabled, limits=limits)
        self._entries[key] = script
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return script

    def __len__(self) -> int:
        return len(self._entries)


DEFAULT_CACHE = ScriptCache()

# RFC 5228 section 2.4.2.4:
#   encoded-arb-octets = "${hex:" hex-pair-seq "}"
#   encoded-unicode-char = "${unicode:" unicode-hex-seq "}"
#   hex-pair-seq = *blank hex-pair *(1*blank hex-pair) *blank; hex-pair = 1*2HEXDIG
#   unicode-hex-seq = *blank unicode-hex *(1*blank unicode-hex) *blank; unicode-hex = 1*HEXDIG
# A sequence that does not fit the grammar stays as written.
_ENCODED = re.compile(
    r"\$\{(?:(hex):([ \t\r\n]*[0-9A-Fa-f]{1,2}(?:[ \t\r\n]+[0-9A-Fa-f]{1,2})*[ \t\r\n]*)"
    r"|(unicode):([ \t\r\n]*[0-9A-Fa-f]+(?:[ \t\r\n]+[0-9A-Fa-f]+)*[ \t\r\n]*))\}",
    re.IGNORECASE,
)


class _Checker:
    def __init__(self, enabled: frozenset[str], limits: SieveLimits) -> None:
        self.enabled = enabled
        self.limits = limits
        self.requires: set[str] = set()
        self.problems: list[CompileProblem] = []

    def error(self, line: int, column: int, message: str) -> None:
        self.problems.append(CompileProblem(line, column, message))

    def script(self, nodes: tuple[Node, ...]) -> tuple[Call, ...]:
        seen_other = False
        for node in nodes:
            if node.name != "require":
                seen_other = True
                continue
            if seen_other:
                self.error(node.line, node.column,
                           "require must come before any other command")
            for argument in node.arguments:
                if isinstance(argument, StringArg):
                    for name in argument.values:
                        if name not in self.enabled:
                            self.error(argument.line, argument.column,
                                       f"unsupported extension '{name}'")
                        else:
                            self.requires.add(name)
        return self.block(nodes, top=True)

    def block(self, nodes: tuple[Node, ...], top: bool = False) -> tuple[Call, ...]:
        out: list[Call] = []
        previous = ""
        for node in nodes:
            if node.name in ("elsif", "else") and previous not in ("if", "elsif"):
                self.error(node.line, node.column,
                           f"'{node.name}' must follow 'if' or 'elsif'")
            if node.name == "require" and not top:
                self.error(node.line, node.column, "require is only allowed at the top level")
            previous = node.name
            call = self.node(node, is_test=False)
            if call is not None:
                out.append(call)
        return tuple(out)

    def node(self, node: Node, is_test: bool) -> Call | None:
        table = REGISTRY.tests if is_test else REGISTRY.commands
        what = "test" if is_test else "command"
        signature = table.get(node.name)
        if signature is None:
            other = REGISTRY.commands if is_test else REGISTRY.tests
            hint = f" ('{node.name}' is a {'command' if is_test else 'test'})" if (
                node.name in other) else ""
            self.error(node.line, node.column, f"unknown {what} '{node.name}'{hint}")
            return None
        if signature.extension is not None and signature.extension not in self.requires:
            self.error(node.line, node.column, f"{what} '{node.name}' needs require "
                       f"\"{signature.extension}\"")
            return None
        options, args = self.arguments(node, signature)
        tests = self.tests(node, signature)
        block: tuple[Call, ...] | None = None
        if signature.block:
            if node.block is None:
                self.error(node.line, node.column, f"'{node.name}' needs a block")
            block = self.block(node.block or ())
        elif node.block is not None:
            self.error(node.line, node.column, f"'{node.name}' takes no block")
        if options is None or args is None:
            return None
        call = Call(node.name, options, args, tests, block, node.line, node.column)
        before = len(self.problems)
        self.matching(call)
        if signature.check is not None and len(self.problems) == before:
            signature.check(call, CheckScope(frozenset(self.requires), self.problems))
        return call

    def tests(self, node: Node, signature: Signature) -> tuple[Call, ...]:
        if signature.tests == 0:
            if node.tests:
                self.error(node.line, node.column, f"'{node.name}' takes no test")
            return ()
        if not node.tests:
            self.error(node.line, node.column, f"'{node.name}' needs a test")
            return ()
        if signature.tests == 1 and (node.test_list or len(node.tests) != 1):
            self.error(node.line, node.column, f"'{node.name}' takes exactly one test, "
                       "not a test list")
        if signature.tests == -1 and not node.test_list:
            self.error(node.line, node.column, f"'{node.name}' needs a test list in "
                       "parentheses")
        out = [self.node(test, is_test=True) for test in node.tests]
        return tuple(call for call in out if call is not None)

    def arguments(
        self, node: Node, signature: Signature
    ) -> tuple[dict[str, Value] | None, tuple[Value, ...] | None]:
        tags = {tag.name: tag for tag in signature.tags}
        options: dict[str, Value] = {}
        positional: list[StringArg | NumberArg] = []
        ok = True
        arguments = node.arguments
        index = 0
        while index < len(arguments):
            argument = arguments[index]
            index += 1
            if not isinstance(argument, TagArg):
                positional.append(argument)
                continue
            if positional:
                self.error(argument.line, argument.column, f"tag '{argument.name}' must come "
                           f"before the positional arguments of '{node.name}'")
                ok = False
                continue
            tag = tags.get(argument.name)
            if tag is None:
                self.error(argument.line, argument.column,
                           f"unknown tag '{argument.name}' for '{node.name}'")
                ok = False
                continue
            if tag.extension is not None and tag.extension not in self.requires:
                self.error(argument.line, argument.column,
                           f"tag '{tag.name}' needs require \"{tag.extension}\"")
                ok = False
            key = tag.group or tag.name
            if key in options or tag.name in options:
                self.error(argument.line, argument.column, self._twice(tag, options))
                ok = False
            value: Value = True
            if tag.value is not None:
                following = arguments[index] if index < len(arguments) else None
                index += 1
                converted = self.value(following, tag.value)
                if converted is None:
                    self.error(argument.line, argument.column,
                               f"tag '{tag.name}' needs a {tag.value.value} after it")
                    ok = False
                    continue
                value = converted
            if tag.group is not None:
                options[tag.group] = tag.name
                if tag.value is not None:
                    options[tag.name] = value
            else:
                options[tag.name] = value
        kinds = signature.positional
        if signature.name in _OPTIONAL_FIRST and len(positional) == len(kinds) - 1:
            kinds = kinds[1:]
        if signature.name in _OPTIONAL_LAST and len(positional) == len(kinds) - 1:
            kinds = kinds[:-1]
        if len(positional) != len(kinds):
            where = positional[len(kinds)] if len(positional) > len(kinds) else node
            self.error(where.line, where.column, f"'{node.name}' takes {len(kinds)} "
                       f"positional argument{'s' if len(kinds) != 1 else ''}, "
                       f"found {len(positional)}")
            return None, None
        args: list[Value] = []
        for argument, kind in zip(positional, kinds, strict=True):
            converted = self.value(argument, kind)
            if converted is None:
                self.error(argument.line, argument.column,
                           f"'{node.name}' expects a {kind.value} here")
                ok = False
                continue
            args.append(converted)
        return (options, tuple(args)) if ok else (None, None)

    @staticmethod
    def _twice(tag: Tag, options: dict[str, Value]) -> str:
        if tag.group is not None and tag.group in options:
            return f"tag '{tag.name}' conflicts with '{options[tag.group]}'"
        return f"tag '{tag.name}' given twice"

    def value(self, argument: object, kind: ArgKind) -> Value | None:
        if kind is ArgKind.NUMBER:
            return argument.value if isinstance(argument, NumberArg) else None
        if not isinstance(argument, StringArg):
            return None
        values = tuple(self.decode(s, argument) for s in argument.values)
        if kind is ArgKind.STRING:
            return values[0] if not argument.listed else None
        return values

    def decode(self, value: str, where: StringArg) -> str:
        """RFC 5228 section 2.4.2.4 encoded characters, when required."""
        if "encoded-character" not in self.requires or "${" not in value:
            return value

        def replace(found: re.Match[str]) -> str:
            if found.group(1):
                octets = bytes(int(w, 16) for w in found.group(2).split())
                try:
                    return octets.decode("utf-8")
                except UnicodeDecodeError:
                    self.error(where.line, where.column,
                               f"encoded characters {found.group()!r} are not valid UTF-8")
                    return found.group()
            out = []
            for word in found.group(4).split():
                point = int(word, 16)
                # "It is an error for a script to use a hexadecimal value that isn't in either
                # the range 0 to D7FF or the range E000 to 10FFFF."
                if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
                    self.error(where.line, where.column,
                               f"invalid unicode character {word!r} in {found.group()!r}")
                    return found.group()
                out.append(chr(point))
            return "".join(out)

        return _ENCODED.sub(replace, value)

    def matching(self, call: Call) -> None:
        """Comparator, match type and relational checks shared by every matching test."""
        comparator = call.option_string(":comparator")
        match = call.option_string("match")
        if comparator is not None:
            needed = COMPARATORS.get(comparator.lower(), "unknown")
            if needed == "unknown":
                self.error(call.line, call.column, f"unknown comparator '{comparator}'")
                return
            if needed is not None and needed not in self.requires:
                self.error(call.line, call.column,
                           f"comparator '{comparator}' needs require \"{needed}\"")
            if comparator.lower() == "i;ascii-numeric" and match in SUBSTRING_MATCHES:
                self.error(call.line, call.column,
                           f"comparator '{comparator}' cannot be used with {match}")
        if match in (":count", ":value"):
            relation = call.option_string(match)
            if relation is not None and relation.lower() not in RELATIONS and not (
                    "variables" in self.requires and "${" in relation):
                self.error(call.line, call.column, f"invalid relational match '{relation}' "
                           f"(expected one of {', '.join(RELATIONS)})")
        if match == ":regex" and not (call.name == "deleteheader" and len(call.args) < 2):
            keys_index = len(call.args) - 1
            for key in call.arg_strings(keys_index) if call.args else ():
                if "variables" in self.requires and "${" in key:
                    continue
                problem = check_regex(key, self.limits.max_regex_program)
                if problem is not None:
                    self.error(call.line, call.column, problem)

