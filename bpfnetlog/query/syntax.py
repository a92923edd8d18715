"""The query AST and its recursive-descent parser.

    query    := or_expr? EOF
    or_expr  := and_expr (OR and_expr)*
    and_expr := unary (AND? unary)*                 (juxtaposition is AND)
    unary    := (NOT | - | !) unary | + unary | primary
    primary  := ( or_expr ) | field:value | field:(or_expr) | value

    value    := word | "phrase" | >=v | >v | <=v | <v | [a TO b] | {a TO b} (mixable, * = open)

Operators are case-insensitive (`and` works like `AND`); quote a word to search
for it. A value without a field searches the table's text fields, or, inside
`field:( ... )`, that field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bpfnetlog.query.errors import QueryError
from bpfnetlog.query.lexer import Kind, Token, tokenize

_FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMPARATORS = (">=", "<=", ">", "<")


@dataclass(frozen=True)
class Value:
    """A value as typed: `text` is unescaped; `like` is a LIKE pattern when it has wildcards."""

    text: str
    like: str | None
    pos: int
    quoted: bool = False


@dataclass(frozen=True)
class Compare:
    field: str
    field_pos: int
    op: str  # "=", ">", ">=", "<", "<="
    value: Value


@dataclass(frozen=True)
class Range:
    field: str
    field_pos: int
    low: Value | None  # None: open
    high: Value | None
    low_inclusive: bool
    high_inclusive: bool


@dataclass(frozen=True)
class Exists:
    """`field:*`: the field is set."""

    field: str
    field_pos: int


@dataclass(frozen=True)
class FullText:
    value: Value


@dataclass(frozen=True)
class And:
    items: tuple["Node", ...]


@dataclass(frozen=True)
class Or:
    items: tuple["Node", ...]


@dataclass(frozen=True)
class Not:
    item: "Node"


@dataclass(frozen=True)
class MatchAll:
    """The empty query."""


Node = Compare | Range | Exists | FullText | And | Or | Not | MatchAll


def word_value(raw: str, pos: int) -> Value:
    """Unescape a raw word; unescaped `*` / `?` make it a LIKE pattern (escape char `\\`)."""
    text: list[str] = []
    like: list[str] = []
    wild = False
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\":
            i += 1
            c = raw[i]
            text.append(c)
            like.append("\\" + c if c in "%_\\" else c)
        elif c in "*?":
            wild = True
            text.append(c)
            like.append("%" if c == "*" else "_")
        else:
            text.append(c)
            like.append("\\" + c if c in "%_\\" else c)
        i += 1
    return Value("".join(text), "".join(like) if wild else None, pos)


def _split_field(raw: str) -> int:
    """Index of the first unescaped colon in a raw word, or -1."""
    i = 0
    while i < len(raw):
        if raw[i] == "\\":
            i += 2
            continue
        if raw[i] == ":":
            return i
        i += 1
    return -1


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, message: str, pos: int | None = None) -> QueryError:
        return QueryError(message, self.tok.pos if pos is None else pos, self.text)

    def parse(self) -> Node:
        if self.tok.kind is Kind.EOF:
            return MatchAll()
        node = self.or_expr(None)
        if self.tok.kind is not Kind.EOF:
            raise self.error(f"unexpected {self.tok.text!r}")
        return node

    def or_expr(self, field: tuple[str, int] | None) -> Node:
        items = [self.and_expr(field)]
        while self.tok.kind is Kind.OR:
            self.take()
            items.append(self.and_expr(field))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self, field: tuple[str, int] | None) -> Node:
        items = [self.unary(field)]
        while self.tok.kind not in (Kind.OR, Kind.RPAREN, Kind.EOF):
            if self.tok.kind is Kind.AND:
                self.take()
            items.append(self.unary(field))
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self, field: tuple[str, int] | None) -> Node:
        tok = self.tok
        if tok.kind is Kind.NOT:
            self.take()
            return Not(self.unary(field))
        if tok.kind is Kind.PLUS:
            self.take()
            return self.unary(field)
        return self.primary(field)

    def primary(self, field: tuple[str, int] | None) -> Node:
        tok = self.tok
        if tok.kind is Kind.LPAREN:
            self.take()
            node = self.or_expr(field)
            if self.tok.kind is not Kind.RPAREN:
                raise self.error(f"expected ')' to close the '(' at character {tok.pos}")
            self.take()
            return node
        if tok.kind is Kind.WORD:
            colon = _split_field(tok.text)
            if colon >= 0:
                return self.field_term(tok, colon)
            self.take()
            return self.value_term(field, tok.text, tok.pos) if field else FullText(word_value(tok.text, tok.pos))
        if tok.kind is Kind.PHRASE:
            self.take()
            value = Value(tok.text, None, tok.pos, quoted=True)
            return self.match(field, "=", value) if field else FullText(value)
        if field and tok.kind in (Kind.LBRACKET, Kind.LBRACE):
            return self.range(field)
        if tok.kind is Kind.EOF:
            raise self.error("the query ends where a term was expected")
        raise self.error(f"expected a term, found {tok.text!r}")

    def field_term(self, tok: Token, colon: int) -> Node:
        """`field:...`; the word `tok` holds the field, the colon, maybe the value."""
        name = tok.text[:colon]
        if not _FIELD_RE.fullmatch(name):
            raise self.error(f"{name!r} is not a field name (to search for it, put it in quotes)", tok.pos)
        field = (name, tok.pos)
        self.take()
        rest, rest_pos = tok.text[colon + 1 :], tok.pos + colon + 1
        if rest:
            return self.value_term(field, rest, rest_pos)
        nxt = self.tok
        if nxt.kind is Kind.LPAREN:
            self.take()
            node = self.or_expr(field)
            if self.tok.kind is not Kind.RPAREN:
                raise self.error(f"expected ')' to close the '(' at character {nxt.pos}")
            self.take()
            return node
        if nxt.kind in (Kind.LBRACKET, Kind.LBRACE):
            return self.range(field)
        return self.match(field, "=", self.value(f"a value after '{name}:'"))

    def value_term(self, field: tuple[str, int], raw: str, pos: int) -> Node:
        """The value part of `field:value`, which may start with a comparator."""
        for op in _COMPARATORS:
            if raw.startswith(op):
                rest = raw[len(op) :]
                value = word_value(rest, pos + len(op)) if rest else self.value(f"a value after '{op}'")
                if value.like is not None:
                    raise self.error(f"wildcards do not go with '{op}'", value.pos)
                return Compare(field[0], field[1], op, value)
        return self.match(field, "=", word_value(raw, pos))

    def value(self, what: str) -> Value:
        """One value token: a word, a phrase, or `-` glued to a word (a negative number)."""
        tok = self.tok
        if tok.kind is Kind.WORD and _split_field(tok.text) < 0:
            self.take()
            return word_value(tok.text, tok.pos)
        if tok.kind is Kind.PHRASE:
            self.take()
            return Value(tok.text, None, tok.pos, quoted=True)
        nxt = self.tokens[self.i + 1] if tok.kind is not Kind.EOF else tok
        if tok.text == "-" and nxt.kind is Kind.WORD and nxt.pos == tok.end:
            self.i += 2
            return word_value("-" + nxt.text, tok.pos)
        raise self.error(f"expected {what}")

    def match(self, field: tuple[str, int], op: str, value: Value) -> Node:
        if value.like == "%" and not value.quoted:
            return Exists(field[0], field[1])
        return Compare(field[0], field[1], op, value)

    def range(self, field: tuple[str, int]) -> Node:
        opening = self.take()
        low = self.bound()
        to = self.tok
        if not (to.kind is Kind.WORD and to.text.upper() == "TO"):
            raise self.error("expected TO in the range")
        self.take()
        high = self.bound()
        closing = self.tok
        if closing.kind not in (Kind.RBRACKET, Kind.RBRACE):
            raise self.error(f"expected ']' or '}}' to close the range opened at character {opening.pos}")
        self.take()
        return Range(
            field[0], field[1], low, high, opening.kind is Kind.LBRACKET, closing.kind is Kind.RBRACKET
        )

    def bound(self) -> Value | None:
        value = self.value("a range bound (a value or *)")
        if value.like == "%" and not value.quoted:
            return None
        if value.like is not None:
            raise self.error("wildcards do not go in a range", value.pos)
        return value


def parse(text: str) -> Node:
    """The AST of a query; QueryError (with a caret position) if it is not valid."""
    return _Parser(text).parse()
