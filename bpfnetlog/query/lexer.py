"""Tokens of the query language.

A word runs until whitespace or one of `()[]{}"`, so colons stay inside it:
`src_ip:fe80::1` is one word that the parser splits at its first colon.
A backslash escapes any character. Words keep their raw text (escapes
included) because only the parser knows whether `*` is a wildcard there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from bpfnetlog.query.errors import QueryError


class Kind(Enum):
    WORD = "word"
    PHRASE = "phrase"  # "quoted", text already unescaped
    LPAREN = "("
    RPAREN = ")"
    LBRACKET = "["
    RBRACKET = "]"
    LBRACE = "{"
    RBRACE = "}"
    AND = "AND"
    OR = "OR"
    NOT = "NOT"  # NOT, !, and - in front of a term
    PLUS = "+"  # + in front of a term: required, which AND already means
    EOF = "end of query"


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str
    pos: int
    end: int


_SINGLE = {"(": Kind.LPAREN, ")": Kind.RPAREN, "[": Kind.LBRACKET, "]": Kind.RBRACKET, "{": Kind.LBRACE, "}": Kind.RBRACE}
_WORD_STOP = set(_SINGLE) | {'"'}
_OPERATORS = {"and": Kind.AND, "&&": Kind.AND, "or": Kind.OR, "||": Kind.OR, "not": Kind.NOT}
_PREFIX = {"-": Kind.NOT, "!": Kind.NOT, "+": Kind.PLUS}


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in _SINGLE:
            tokens.append(Token(_SINGLE[c], c, i, i + 1))
            i += 1
        elif c == '"':
            tokens.append(_phrase(text, i))
            i = tokens[-1].end
        elif c in _PREFIX and i + 1 < n and not text[i + 1].isspace() and text[i + 1] not in ")]}":
            tokens.append(Token(_PREFIX[c], c, i, i + 1))
            i += 1
        else:
            j = _word_end(text, i)
            raw = text[i:j]
            tokens.append(Token(_OPERATORS.get(raw.lower(), Kind.WORD), raw, i, j))
            i = j
    tokens.append(Token(Kind.EOF, "", n, n))
    return tokens


def _word_end(text: str, i: int) -> int:
    n = len(text)
    while i < n and not text[i].isspace() and text[i] not in _WORD_STOP:
        if text[i] == "\\":
            if i + 1 == n:
                raise QueryError("a backslash must be followed by the character it escapes", i, text)
            i += 1
        i += 1
    return i


def _phrase(text: str, start: int) -> Token:
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            return Token(Kind.PHRASE, "".join(out), start, i + 1)
        else:
            out.append(c)
            i += 1
    raise QueryError("unterminated quoted value", start, text)
