"""Lexer and parser: RFC 5228 section 2 and 8 syntax, exact error positions, and properties."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealmail.sieve import SieveCompileError, SieveLimits, compile_script
from sealmail.sieve._ast import NumberArg, StringArg, TagArg
from sealmail.sieve._lexer import Kind, tokenize
from sealmail.sieve._parser import parse


def first_problem(text: str) -> str:
    with pytest.raises(SieveCompileError) as caught:
        compile_script(text)
    return str(caught.value.problems[0])


def test_tokens_carry_line_and_column() -> None:
    tokens = tokenize('if true {\n  keep;\n}')
    assert [(t.kind, t.text, t.line, t.column) for t in tokens] == [
        (Kind.IDENTIFIER, "if", 1, 1), (Kind.IDENTIFIER, "true", 1, 4),
        (Kind.PUNCT, "{", 1, 9), (Kind.IDENTIFIER, "keep", 2, 3), (Kind.PUNCT, ";", 2, 7),
        (Kind.PUNCT, "}", 3, 1), (Kind.END, "", 3, 2),
    ]


def test_numbers_with_quantifiers() -> None:
    values = [t.number for t in tokenize("1 2K 3M 4G 5k") if t.kind is Kind.NUMBER]
    assert values == [1, 2048, 3 << 20, 4 << 30, 5120]


def test_quoted_string_escapes() -> None:
    # RFC 5228 section 2.4.2: "\\" and "\"" stand for themselves, any other "\x" for "x"
    (token, _end) = tokenize(r'"a\"b\\c\d"')
    assert token.text == 'a"b\\cd'


def test_multiline_string_dot_unstuffing_and_comment() -> None:
    nodes = parse('reject text: # comment\r\nline one\r\n..dot\r\n.\r\n;')
    argument = nodes[0].arguments[0]
    assert isinstance(argument, StringArg)
    assert argument.values == ("line one\r\n.dot\r\n",)


def test_lf_only_strings_become_crlf() -> None:
    nodes = parse('reject "a\nb";')
    argument = nodes[0].arguments[0]
    assert isinstance(argument, StringArg) and argument.values == ("a\r\nb",)


def test_comments_are_skipped_and_lines_counted() -> None:
    text = "/* one\ntwo */ # three\nkeep;\n/* x */ stop;"
    nodes = parse(text)
    assert [(n.name, n.line, n.column) for n in nodes] == [("keep", 3, 1), ("stop", 4, 9)]


def test_arguments_tests_and_blocks() -> None:
    (node,) = parse('if anyof (header :is ["a", "b"] "c", size :over 10) { stop; }')
    (test,) = node.tests
    assert node.block is not None and test.test_list
    header, size = test.tests
    assert isinstance(header.arguments[0], TagArg)
    assert header.arguments[1] == StringArg(("a", "b"), True, 1, 22)
    assert isinstance(size.arguments[1], NumberArg) and size.arguments[1].value == 10


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("keep", "line 1, column 5: expected ';' or '{' after command 'keep' but found end of "
                 "script"),
        ('if true {\n keep;\n', "line 3, column 1: expected '}' but found end of script"),
        ('fileinto "a', "line 1, column 12: unterminated string: missing '\"' (opened at line "
                        "1, column 10)"),
        ('if true {\n  fileinto "a;\n}\n', "line 4, column 1: unterminated string: missing "
                                          "'\"' (opened at line 2, column 12)"),
        ("/* open", "line 1, column 8: unterminated comment: missing '*/' (opened at line 1, "
                    "column 1)"),
        ("keep;\n  @", "line 2, column 3: unexpected character '@'"),
        ('if header :is ["a" "b"] {}', "line 1, column 20: expected ',' or ']' in string list "
                                       "but found string"),
        ("reject text:\nfoo\n", "line 3, column 1: unterminated multi-line string: missing "
                                "'.' line (opened at line 1, column 8)"),
        ("size :over 10X;", "line 1, column 12: invalid number '10X'"),
        ("foo;", "line 1, column 1: unknown command 'foo'"),
        ("if foo {}", "line 1, column 4: unknown test 'foo'"),
        ("if keep {}", "line 1, column 4: unknown test 'keep' ('keep' is a command)"),
        ('fileinto "x";', "line 1, column 1: command 'fileinto' needs require \"fileinto\""),
        ('require "nope";', "line 1, column 9: unsupported extension 'nope'"),
        ('keep;\nrequire "fileinto";', "line 2, column 1: require must come before any other "
                                       "command"),
        ("else { keep; }", "line 1, column 1: 'else' must follow 'if' or 'elsif'"),
        ('redirect :copy "a@b.c";', "line 1, column 10: tag ':copy' needs require \"copy\""),
        ('if header :is :contains "a" "b" {}',
         "line 1, column 15: tag ':contains' conflicts with ':is'"),
        ('if header "a" :is "b" {}',
         "line 1, column 15: tag ':is' must come before the positional arguments of 'header'"),
        ('if header :comparator "i;nope" "a" "b" {}', "line 1, column 4: unknown comparator "
                                                      "'i;nope'"),
        ('require "relational";\nif header :count "xx" "a" "1" {}',
         "line 2, column 4: invalid relational match 'xx' (expected one of gt, ge, lt, le, eq, "
         "ne)"),
        ('require "comparator-i;ascii-numeric";\n'
         'if header :contains :comparator "i;ascii-numeric" "a" "1" {}',
         "line 2, column 4: comparator 'i;ascii-numeric' cannot be used with :contains"),
        ('if header :is "a" {}', "line 1, column 4: 'header' takes 2 positional arguments, "
                                 "found 1"),
        ("if true;", "line 1, column 1: 'if' needs a block"),
        ("if (true) {}", "line 1, column 1: 'if' takes exactly one test, not a test list"),
        ("if allof true {}", "line 1, column 4: 'allof' needs a test list in parentheses"),
        ('redirect "not an address";', "line 1, column 1: redirect: invalid address "
                                       "'not an address'"),
        ('require "regex";\nif header :regex "s" "a(b" {}',
         "line 2, column 4: missing ')' at offset 3 of regex 'a(b'"),
        ('require ["encoded-character"];\nkeep :flags "${unicode:D800}";',
         "line 2, column 6: tag ':flags' needs require \"imap4flags\""),
    ],
)
def test_compile_errors_are_exact(text: str, problem: str) -> None:
    assert first_problem(text) == problem


def test_every_problem_is_reported() -> None:
    with pytest.raises(SieveCompileError) as caught:
        compile_script("foo;\nif bar {}\nbaz;")
    assert [(p.line, p.column) for p in caught.value.problems] == [(1, 1), (2, 4), (3, 1)]
    assert caught.value.line == 1


def test_invalid_unicode_encoded_character_is_an_error() -> None:
    # RFC 5228 section 2.4.2.4: values outside 0-D7FF and E000-10FFFF are errors
    problem = first_problem('require ["encoded-character", "fileinto"];\n'
                            'fileinto "${unicode:D800}";')
    assert problem == ("line 2, column 10: invalid unicode character 'D800' in "
                       "'${unicode:D800}'")


def test_limits_script_size_and_nesting() -> None:
    with pytest.raises(SieveCompileError, match="more than the limit of 10"):
        compile_script("keep; keep; keep;", limits=SieveLimits(max_script_size=10))
    deep = "if true {" * 5 + "}" * 5
    with pytest.raises(SieveCompileError, match="nesting deeper than 3 levels"):
        compile_script(deep, limits=SieveLimits(max_nesting=3))
    deep_tests = "if " + "not " * 50 + "true {}"
    with pytest.raises(SieveCompileError, match="nesting deeper than 10"):
        compile_script(deep_tests, limits=SieveLimits(max_nesting=10))


# --- properties -------------------------------------------------------------------------------
SIEVE_PIECES = st.sampled_from(
    [*'ifelsfkeeprqu:"[](){},;#/*\\\n\r\t 0123456789KMG.textheadrsz',
     "text:\n", "${", "if ", "header ", ":is ", "require ", '"fileinto"', "keep;", "\n.\n"])


@settings(max_examples=300, deadline=None)
@given(st.lists(SIEVE_PIECES, max_size=40).map("".join))
def test_compiler_never_crashes_on_sieve_like_text(text: str) -> None:
    try:
        compile_script(text)
    except SieveCompileError as exc:
        assert exc.problems and all(p.line >= 1 and p.column >= 1 for p in exc.problems)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_compiler_never_crashes_on_any_text(text: str) -> None:
    with contextlib.suppress(SieveCompileError):
        compile_script(text)


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
               max_size=40))
def test_quoted_string_round_trip(value: str) -> None:
    (token, _) = tokenize(quote(value))
    assert token.kind is Kind.STRING and token.text == value


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",),
                                      blacklist_characters="\r\n"), max_size=20), max_size=5))
def test_multiline_string_round_trip(lines: list[str]) -> None:
    stuffed = "".join(("." + line if line.startswith(".") else line) + "\r\n" for line in lines)
    (token, _) = tokenize("text:\r\n" + stuffed + ".\r\n")
    assert token.text == "".join(line + "\r\n" for line in lines)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=(1 << 31)),
       st.sampled_from(["", "K", "M", "G"]))
def test_number_round_trip(number: int, quantifier: str) -> None:
    (token, _) = tokenize(f"{number}{quantifier}")
    assert token.number == number * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[quantifier]
