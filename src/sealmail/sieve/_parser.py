"""RFC 5228 section 8.2 grammar, recursive descent over the lexer's tokens.

    command    = identifier arguments (";" / block)
    arguments  = *argument [ test / test-list ]
    argument   = string-list / number / tag
    block      = "{" commands "}"
    test       = identifier arguments
    test-list  = "(" test *("," test) ")"
    string-list = "[" string *("," string) "]" / string

Nesting is bounded (`max_nesting`) so that a hostile script cannot exhaust the stack.
"""

from __future__ import annotations

from sealmail.sieve._ast import Argument, Node, NumberArg, StringArg, TagArg
from sealmail.sieve._lexer import Kind, Token, tokenize
from sealmail.sieve.errors import CompileProblem, SieveCompileError


def parse(text: str, max_nesting: int = 64) -> tuple[Node, ...]:
    """The commands of `text`; raises SieveCompileError at the first syntax error."""
    return _Parser(tokenize(text), max_nesting).script()


def _describe(token: Token) -> str:
    if token.kind is Kind.END:
        return "end of script"
    if token.kind is Kind.STRING:
        return "string"
    if token.kind is Kind.NUMBER:
        return f"number {token.text}"
    if token.kind is Kind.TAG:
        return f"tag '{token.text}'"
    return f"'{token.text}'"


class _Parser:
    def __init__(self, tokens: list[Token], max_nesting: int) -> None:
        self.tokens = tokens
        self.pos = 0
        self.max_nesting = max_nesting
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        if token.kind is not Kind.END:
            self.pos += 1
        return token

    def is_punct(self, char: str) -> bool:
        token = self.peek()
        return token.kind is Kind.PUNCT and token.text == char

    def error(self, token: Token, message: str) -> SieveCompileError:
        return SieveCompileError([CompileProblem(token.line, token.column, message)])

    def nest(self, token: Token) -> None:
        self.depth += 1
        if self.depth > self.max_nesting:
            raise self.error(token, f"nesting deeper than {self.max_nesting} levels")

    def script(self) -> tuple[Node, ...]:
        commands = self.commands()
        token = self.peek()
        if token.kind is not Kind.END:
            raise self.error(token, f"expected a command but found {_describe(token)}")
        return commands

    def commands(self) -> tuple[Node, ...]:
        out: list[Node] = []
        while self.peek().kind is Kind.IDENTIFIER:
            out.append(self.command())
        return tuple(out)

    def command(self) -> Node:
        name = self.take()
        arguments, tests, test_list = self.arguments(name)
        token = self.peek()
        if token.kind is Kind.PUNCT and token.text == ";":
            self.take()
            return Node(name.text, arguments, tests, test_list, None, name.line, name.column)
        if token.kind is Kind.PUNCT and token.text == "{":
            self.take()
            self.nest(token)
            block = self.commands()
            close = self.peek()
            if not (close.kind is Kind.PUNCT and close.text == "}"):
                raise self.error(close, f"expected '}}' but found {_describe(close)}")
            self.take()
            self.depth -= 1
            return Node(name.text, arguments, tests, test_list, block, name.line, name.column)
        raise self.error(
            token, f"expected ';' or '{{' after command '{name.text}' but found {_describe(token)}"
        )

    def arguments(self, owner: Token) -> tuple[tuple[Argument, ...], tuple[Node, ...], bool]:
        arguments: list[Argument] = []
        while True:
            token = self.peek()
            if token.kind is Kind.TAG:
                self.take()
                arguments.append(TagArg(token.text, token.line, token.column))
            elif token.kind is Kind.NUMBER:
                self.take()
                arguments.append(NumberArg(token.number, token.line, token.column))
            elif token.kind is Kind.STRING:
                self.take()
                arguments.append(StringArg((token.text,), False, token.line, token.column))
            elif token.kind is Kind.PUNCT and token.text == "[":
                arguments.append(self.string_list())
            else:
                break
        token = self.peek()
        if token.kind is Kind.IDENTIFIER:
            self.nest(token)
            test = self.test()
            self.depth -= 1
            return tuple(arguments), (test,), False
        if token.kind is Kind.PUNCT and token.text == "(":
            self.take()
            self.nest(token)
            tests = [self.test()]
            while self.is_punct(","):
                self.take()
                tests.append(self.test())
            close = self.peek()
            if not (close.kind is Kind.PUNCT and close.text == ")"):
                raise self.error(close, f"expected ',' or ')' in test list but found "
                                 f"{_describe(close)}")
            self.take()
            self.depth -= 1
            return tuple(arguments), tuple(tests), True
        return tuple(arguments), (), False

    def test(self) -> Node:
        name = self.peek()
        if name.kind is not Kind.IDENTIFIER:
            raise self.error(name, f"expected a test but found {_describe(name)}")
        self.take()
        arguments, tests, test_list = self.arguments(name)
        return Node(name.text, arguments, tests, test_list, None, name.line, name.column)

    def string_list(self) -> StringArg:
        open_ = self.take()
        values: list[str] = []
        while True:
            token = self.peek()
            if token.kind is not Kind.STRING:
                raise self.error(token, f"expected a string in string list but found "
                                 f"{_describe(token)}")
            self.take()
            values.append(token.text)
            if self.is_punct(","):
                self.take()
                continue
            if self.is_punct("]"):
                self.take()
                return StringArg(tuple(values), True, open_.line, open_.column)
            token = self.peek()
            raise self.error(token, f"expected ',' or ']' in string list but found "
                             f"{_describe(token)}")
