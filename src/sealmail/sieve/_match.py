"""Comparators (RFC 4790, RFC 5228 section 2.7.3) and match types (section 2.7.1, RFC 5231, regex).

A comparator says what "equal", "contains" and "less than" mean; a match type says which of them a
test asks. `i;ascii-numeric` has no substring operation (RFC 4790 section 9.1), so :contains,
:matches and :regex with it are compile errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sealmail.sieve._regex import Regex, RegexError, compile_regex

# comparator name -> the capability `require` must name for it (None: always available)
COMPARATORS = {
    "i;octet": None,
    "i;ascii-casemap": None,
    "i;ascii-numeric": "comparator-i;ascii-numeric",
}
RELATIONS = ("gt", "ge", "lt", "le", "eq", "ne")
SUBSTRING_MATCHES = (":contains", ":matches", ":regex")


def _ascii_lower(value: str) -> str:
    """i;ascii-casemap folds only a-z (RFC 4790 section 9.2), never other scripts."""
    return value.translate(_FOLD)


_FOLD = {ord(c): ord(c) + 32 for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def _numeric(value: str) -> int | None:
    """i;ascii-numeric: the leading digits' value; None (positive infinity) when there are none."""
    end = 0
    while end < len(value) and "0" <= value[end] <= "9":
        end += 1
    return int(value[:end]) if end else None


def _order(comparator: str, left: str, right: str) -> int:
    """-1, 0 or 1 as `left` sorts before, with or after `right`."""
    if comparator == "i;ascii-numeric":
        a, b = _numeric(left), _numeric(right)
        if a is None or b is None:
            return 0 if a is None and b is None else (1 if a is None else -1)
        return (a > b) - (a < b)
    if comparator == "i;ascii-casemap":
        left, right = _ascii_lower(left), _ascii_lower(right)
    left_bytes = left.encode("utf-8", "surrogateescape")
    right_bytes = right.encode("utf-8", "surrogateescape")
    return (left_bytes > right_bytes) - (left_bytes < right_bytes)


def relation_holds(relation: str, order: int) -> bool:
    return {
        "gt": order > 0, "ge": order >= 0, "lt": order < 0,
        "le": order <= 0, "eq": order == 0, "ne": order != 0,
    }[relation]


MAX_WILDCARD_CELLS = 4_000_000


def wildcard_match(pattern: str, subject: str, casefold: bool) -> tuple[str, ...] | None:
    """RFC 5228 section 2.7.1 :matches; the wildcards' texts (RFC 5229 section 3.2) or None.

    "*" matches as little as it can so that the whole pattern still matches (RFC 5229's examples
    give earlier wildcards the shortest text), "?" exactly one character, "\\" quotes the next
    one. A table of which (token, position) pairs can finish the match is filled from the end,
    so the work is at most len(tokens) * len(subject), whatever the pattern.
    """
    original = subject
    if casefold:
        subject = _ascii_lower(subject)
    tokens: list[tuple[str, str]] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            char = pattern[index + 1]
            tokens.append(("lit", _ascii_lower(char) if casefold else char))
            index += 2
            continue
        if char in "*?":
            tokens.append((char, ""))
        else:
            tokens.append(("lit", _ascii_lower(char) if casefold else char))
        index += 1
    length = len(subject)
    if (len(tokens) + 1) * (length + 1) > MAX_WILDCARD_CELLS:
        raise ValueError(f":matches pattern of {len(tokens)} characters is too large for a "
                         f"value of {length} characters")
    # can[t][s]: tokens[t:] match subject[s:]
    can = [[False] * (length + 1) for _ in range(len(tokens) + 1)]
    can[len(tokens)][length] = True
    for t in range(len(tokens) - 1, -1, -1):
        kind, literal = tokens[t]
        row, following = can[t], can[t + 1]
        if kind == "*":
            row[length] = following[length]
            for s in range(length - 1, -1, -1):
                row[s] = following[s] or row[s + 1]
        elif kind == "?":
            for s in range(length):
                row[s] = following[s + 1]
        else:
            for s in range(length):
                row[s] = following[s + 1] and subject[s] == literal
    if not can[0][0]:
        return None
    captures: list[str] = []
    position = 0
    for t, (kind, _) in enumerate(tokens):
        if kind == "*":
            end = position
            while not can[t + 1][end]:
                end += 1
            captures.append(original[position:end])
            position = end
        elif kind == "?":
            captures.append(original[position:position + 1])
            position += 1
        else:
            position += 1
    return tuple(captures)


@dataclass(frozen=True, slots=True)
class Matcher:
    """A test's comparator and match type, ready to compare values with keys."""

    comparator: str
    match: str  # ":is", ":contains", ":matches", ":regex", ":count", ":value"
    relation: str | None
    max_regex_program: int
    max_regex_steps: int

    def regex(self, key: str) -> Regex:
        return compile_regex(
            key,
            icase=self.comparator == "i;ascii-casemap",
            max_program=self.max_regex_program,
            max_steps=self.max_regex_steps,
        )

    def first_match(
        self, values: Iterable[str], keys: Iterable[str]
    ) -> tuple[bool, tuple[str, ...] | None]:
        """Whether any value matches any key, and the match variables of the first that does."""
        keys = list(keys)
        if self.match == ":count":
            assert self.relation is not None
            count = str(sum(1 for _ in values))
            return any(relation_holds(self.relation, _order(self.comparator, count, key))
                       for key in keys), None
        for value in values:
            for key in keys:
                found, groups = self.compare(value, key)
                if found:
                    return True, groups
        return False, None

    def compare(self, value: str, key: str) -> tuple[bool, tuple[str, ...] | None]:
        if self.match == ":is":
            return _order(self.comparator, value, key) == 0, None
        if self.match == ":value":
            assert self.relation is not None
            return relation_holds(self.relation, _order(self.comparator, value, key)), None
        if self.match == ":contains":
            if self.comparator == "i;ascii-casemap":
                return _ascii_lower(key) in _ascii_lower(value), None
            return key in value, None
        if self.match == ":matches":
            groups = wildcard_match(key, value, self.comparator == "i;ascii-casemap")
            if groups is None:
                return False, None
            return True, (value, *groups)
        found = self.regex(key).search(value)
        return (found is not None), found


def check_regex(key: str, max_program: int) -> str | None:
    """The problem with `key` as an ERE, or None when it compiles within the limits."""
    try:
        compile_regex(key, max_program=max_program)
    except RegexError as exc:
        return str(exc)
    return None
