"""POSIX extended regular expressions for the regex extension, run in linear time.

draft-ietf-sieve-regex-01 section 3 names POSIX ERE (IEEE 1003.2 section 2.8.4). Python's `re`
backtracks, so a pattern like `(a*)*b` can take exponential time on a hostile header; here the
pattern compiles to a small program that a Pike VM runs over the subject one character at a time,
all threads in lock step, so the work is bounded by len(program) * len(subject). The program size
is limited (`max_program`), and so is the total number of steps (`max_steps`).

Submatches follow leftmost-first priority (the first alternative, greedy quantifiers), which agrees
with POSIX leftmost-longest on whether a string matches and on the whole match's start; group
boundaries can differ in rare ambiguous patterns.
"""

from __future__ import annotations

from dataclasses import dataclass

_CLASSES: dict[str, str] = {
    "alpha": "alpha", "digit": "digit", "alnum": "alnum", "upper": "upper", "lower": "lower",
    "space": "space", "blank": "blank", "punct": "punct", "print": "print", "graph": "graph",
    "cntrl": "cntrl", "xdigit": "xdigit",
}


class RegexError(ValueError):
    """The pattern is not a valid ERE, or is too complex for the limits."""


def _in_class(name: str, ch: str) -> bool:
    if name == "alpha":
        return ch.isalpha()
    if name == "digit":
        return "0" <= ch <= "9"
    if name == "alnum":
        return ch.isalnum()
    if name == "upper":
        return ch.isupper()
    if name == "lower":
        return ch.islower()
    if name == "space":
        return ch in " \t\r\n\v\f"
    if name == "blank":
        return ch in " \t"
    if name == "punct":
        return ch.isascii() and ch.isprintable() and not ch.isalnum() and ch != " "
    if name == "print":
        return ch.isprintable()
    if name == "graph":
        return ch.isprintable() and ch != " "
    if name == "cntrl":
        return ord(ch) < 32 or ord(ch) == 127
    return ch in "0123456789abcdefABCDEF"


@dataclass(frozen=True, slots=True)
class _CharSet:
    chars: frozenset[str]
    ranges: tuple[tuple[str, str], ...]
    classes: tuple[str, ...]
    negated: bool
    any_char: bool = False

    def accepts(self, ch: str, icase: bool) -> bool:
        if self.any_char:
            return True
        candidates = (ch, ch.lower(), ch.upper()) if icase else (ch,)
        hit = any(
            c in self.chars
            or any(lo <= c <= hi for lo, hi in self.ranges)
            or any(_in_class(name, c) for name in self.classes)
            for c in candidates
        )
        return hit != self.negated


# Program instructions: (opcode, a, b)
_CHAR, _SPLIT, _JMP, _SAVE, _BOL, _EOL, _MATCH = range(7)
Instruction = tuple[int, object, int]


class _Compiler:
    """Parses ERE syntax straight into Pike VM instructions."""

    def __init__(self, pattern: str, max_program: int) -> None:
        self.pattern = pattern
        self.pos = 0
        self.groups = 0
        self.max_program = max_program

    def fail(self, message: str) -> RegexError:
        return RegexError(f"{message} at offset {self.pos} of regex {self.pattern!r}")

    def peek(self) -> str:
        return self.pattern[self.pos] if self.pos < len(self.pattern) else ""

    # Each parse_* returns a fragment: a list of instructions with jump targets relative to the
    # fragment's start; concatenation shifts them.
    def parse_alternation(self, depth: int) -> list[Instruction]:
        if depth > 100:
            raise self.fail("groups nested too deeply")
        branches = [self.parse_branch(depth)]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.parse_branch(depth))
        fragment = branches[-1]
        for branch in reversed(branches[:-1]):
            # split L1, L2; L1: branch; jmp end; L2: fragment
            head: list[Instruction] = [(_SPLIT, 1, len(branch) + 2)]
            body = _shift(branch, 1)
            jump: list[Instruction] = [(_JMP, len(branch) + 2 + len(fragment), 0)]
            fragment = head + body + jump + _shift(fragment, len(branch) + 2)
            self.check_size(fragment)
        return fragment

    def parse_branch(self, depth: int) -> list[Instruction]:
        fragment: list[Instruction] = []
        while self.peek() not in ("", "|", ")"):
            piece = self.parse_piece(depth)
            fragment = fragment + _shift(piece, len(fragment))
            self.check_size(fragment)
        return fragment

    def parse_piece(self, depth: int) -> list[Instruction]:
        atom = self.parse_atom(depth)
        while self.peek() in ("*", "+", "?", "{"):
            char = self.peek()
            if char == "{":
                low, high = self.parse_bounds()
            else:
                self.pos += 1
                low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[char]
            atom = self.repeat(atom, low, high)
            self.check_size(atom)
        return atom

    def parse_bounds(self) -> tuple[int, int | None]:
        end = self.pattern.find("}", self.pos)
        if end < 0:
            raise self.fail("unterminated '{'")
        body = self.pattern[self.pos + 1 : end]
        low_text, comma, high_text = body.partition(",")
        if not low_text.isdigit() or (high_text and not high_text.isdigit()):
            raise self.fail(f"invalid repetition '{{{body}}}'")
        low = int(low_text)
        high = int(high_text) if high_text else (None if comma else low)
        if low > 255 or (high is not None and (high > 255 or high < low)):
            raise self.fail(f"invalid repetition '{{{body}}}'")
        self.pos = end + 1
        return low, high

    def repeat(self, atom: list[Instruction], low: int, high: int | None) -> list[Instruction]:
        out: list[Instruction] = []
        for _ in range(low):
            out = out + _shift(atom, len(out))
            self.check_size(out)
        if high is None:
            # L1: split L2, L3; L2: atom; jmp L1; L3:
            start = len(out)
            loop: list[Instruction] = [(_SPLIT, 1, len(atom) + 2)]
            loop += _shift(atom, 1)
            loop.append((_JMP, 0, 0))
            return out + _shift(loop, start)
        for _ in range(high - low):
            # split L1, L2; L1: atom; L2:
            start = len(out)
            optional: list[Instruction] = [(_SPLIT, 1, len(atom) + 1), *_shift(atom, 1)]
            out = out + _shift(optional, start)
            self.check_size(out)
        return out

    def parse_atom(self, depth: int) -> list[Instruction]:
        char = self.peek()
        if char in ("*", "+", "?", "{"):
            raise self.fail(f"'{char}' has nothing to repeat")
        self.pos += 1
        if char == "(":
            self.groups += 1
            group = self.groups
            inner = self.parse_alternation(depth + 1)
            if self.peek() != ")":
                raise self.fail("missing ')'")
            self.pos += 1
            return [(_SAVE, 2 * group, 0), *_shift(inner, 1), (_SAVE, 2 * group + 1, 0)]
        if char == ".":
            return [(_CHAR, _CharSet(frozenset(), (), (), False, any_char=True), 0)]
        if char == "^":
            return [(_BOL, 0, 0)]
        if char == "$":
            return [(_EOL, 0, 0)]
        if char == "[":
            return [(_CHAR, self.parse_bracket(), 0)]
        if char == "\\":
            if self.pos >= len(self.pattern):
                raise self.fail("trailing backslash")
            char = self.pattern[self.pos]
            self.pos += 1
            if char.isdigit():
                raise self.fail("back-references are not supported")
        return [(_CHAR, _CharSet(frozenset(char), (), (), False), 0)]

    def parse_bracket(self) -> _CharSet:
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        chars: set[str] = set()
        ranges: list[tuple[str, str]] = []
        classes: list[str] = []
        first = True
        while True:
            if self.pos >= len(self.pattern):
                raise self.fail("missing ']'")
            char = self.pattern[self.pos]
            if char == "]" and not first:
                self.pos += 1
                return _CharSet(frozenset(chars), tuple(ranges), tuple(classes), negated)
            first = False
            if self.pattern.startswith("[:", self.pos):
                end = self.pattern.find(":]", self.pos + 2)
                name = self.pattern[self.pos + 2 : end] if end >= 0 else ""
                if name not in _CLASSES:
                    raise self.fail(f"unknown character class '[:{name}:]'")
                classes.append(name)
                self.pos = end + 2
                continue
            self.pos += 1
            if (
                self.peek() == "-"
                and self.pos + 1 < len(self.pattern)
                and self.pattern[self.pos + 1] != "]"
            ):
                high = self.pattern[self.pos + 1]
                if high < char:
                    raise self.fail(f"invalid range '{char}-{high}'")
                ranges.append((char, high))
                self.pos += 2
                continue
            chars.add(char)

    def check_size(self, fragment: list[Instruction]) -> None:
        if len(fragment) > self.max_program:
            raise RegexError(f"regex {self.pattern!r} is too complex")


def _shift(fragment: list[Instruction], offset: int) -> list[Instruction]:
    if offset == 0:
        return fragment
    out: list[Instruction] = []
    for op, a, b in fragment:
        if op == _SPLIT:
            assert isinstance(a, int)
            out.append((op, a + offset, b + offset))
        elif op == _JMP:
            assert isinstance(a, int)
            out.append((op, a + offset, 0))
        else:
            out.append((op, a, b))
    return out


@dataclass(frozen=True, slots=True)
class Regex:
    """A compiled ERE; `search` finds the leftmost match and its groups."""

    pattern: str
    program: tuple[Instruction, ...]
    groups: int
    icase: bool
    max_steps: int

    def search(self, subject: str) -> tuple[str, ...] | None:
        """The match and each group's text ("" when a group took no part), or None."""
        slots_count = 2 * (self.groups + 1)
        program = self.program
        steps = 0
        current: list[tuple[int, list[int]]] = []
        matched: list[int] | None = None
        length = len(subject)
        for index in range(length + 1):
            if matched is None:
                # a new thread at every position, with the lowest priority: leftmost wins
                start = [-1] * slots_count
                start[0] = index
                current.append((0, start))
            following: list[tuple[int, list[int]]] = []
            seen: set[int] = set()
            char = subject[index] if index < length else ""
            stack: list[tuple[int, list[int]]] = []
            for pc0, slots0 in current:
                stack.append((pc0, slots0))
                while stack:
                    pc, slots = stack.pop()
                    steps += 1
                    if steps > self.max_steps:
                        raise RegexError(f"regex {self.pattern!r} took too many steps")
                    if pc in seen:
                        continue
                    seen.add(pc)
                    op, a, b = program[pc]
                    if op == _JMP:
                        assert isinstance(a, int)
                        stack.append((a, slots))
                    elif op == _SPLIT:
                        assert isinstance(a, int)
                        stack.append((b, slots))
                        stack.append((a, slots))
                    elif op == _SAVE:
                        assert isinstance(a, int)
                        copy = list(slots)
                        copy[a] = index
                        stack.append((pc + 1, copy))
                    elif op == _BOL:
                        if index == 0:
                            stack.append((pc + 1, slots))
                    elif op == _EOL:
                        if index == length:
                            stack.append((pc + 1, slots))
                    elif op == _MATCH:
                        matched = list(slots)
                        matched[1] = index
                        stack.clear()
                        break
                    elif char:
                        assert isinstance(a, _CharSet)
                        if a.accepts(char, self.icase):
                            following.append((pc + 1, slots))
                else:
                    continue
                break  # a match cuts every lower-priority thread
            current = following
            if not current and matched is not None:
                break
        if matched is None:
            return None
        out: list[str] = []
        for group in range(self.groups + 1):
            start_at, end_at = matched[2 * group], matched[2 * group + 1]
            out.append(subject[start_at:end_at] if start_at >= 0 and end_at >= 0 else "")
        return tuple(out)


def compile_regex(
    pattern: str, *, icase: bool = False, max_program: int = 2000, max_steps: int = 2_000_000
) -> Regex:
    """Compile an ERE; raises RegexError when it is invalid or beyond the limits."""
    compiler = _Compiler(pattern, max_program)
    body = compiler.parse_alternation(0)
    if compiler.pos != len(pattern):
        raise compiler.fail("unmatched ')'")
    program = [(_SAVE, 0, 0), *_shift(body, 1), (_MATCH, 0, 0)]
    return Regex(pattern, tuple(program), compiler.groups, icase, max_steps)
