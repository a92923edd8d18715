"""The one error a query can raise, pointing at where in the text it went wrong."""

from __future__ import annotations


class QueryError(ValueError):
    """A query (or a time given with it) that cannot be understood.

    `position` is a character offset into `text`; str() shows the text with a
    caret under it, which is what the CLI and the viewer print.
    """

    def __init__(self, message: str, position: int, text: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.text = text

    def __str__(self) -> str:
        if not self.text:
            return f"{self.message} (at character {self.position})"
        line = self.text.replace("\n", " ").replace("\t", " ")
        return f"{self.message}\n  {line}\n  {' ' * self.position}^"
