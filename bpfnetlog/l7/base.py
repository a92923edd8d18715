"""The contract between the L7 engine and its protocol parsers.

Parsers are sans-IO (like h11/h2): the engine hands them reassembled, in-order
bytes of either direction and they hand back `Message` events. They know
nothing of sockets, packets or records, so each protocol lives in its own
module and is tested on hand-built byte strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Hashable, Protocol

SEQ_MASK = 0xFFFFFFFF


@dataclass(eq=False, slots=True)
class Message:
    """One request or one response, as seen on the wire.

    A parser reports a message when its start is parsed (`complete` False), so
    the engine can mark the packet that starts it at once, and reports the same
    object again when it ends; a message parsed in one go is reported once.
    """

    is_request: bool
    side: int  # 0/1: which endpoint sent it
    seq: int  # raw TCP seq of its first byte (0 over UDP)
    ts_start: int  # ns, packet that carried the first byte
    ts_end: int  # ns, packet that carried the last byte
    length: int  # bytes on the wire, framing included
    fields: dict[str, object] = field(default_factory=dict)  # L7_FIELDS names -> values; read-only (may be shared)
    key: Hashable | None = None  # pairs a response with its request; None: cannot be paired
    complete: bool = False
    traceid: str | None = None  # l7_traceid when TCP seqs cannot give one (UDP)
    tag: object = None  # the engine's bookkeeping; parsers never touch it
    off: int = 0  # the engine's bookkeeping: stream offset of seq


class Parser(Protocol):
    """What the engine calls; one instance per connection, both directions."""

    proto: str  # the l7_proto value of its records
    client_side: int  # -1 until the content told which side is the client
    malformed: int  # messages or bytes the parser had to skip (a counter)

    def feed(self, side: int, data: bytes, seq: int, ts: int) -> list[Message]:
        """In-order bytes of one direction; `seq` is the raw seq of data[0]."""
        ...

    def absorb(self, side: int, size: int, ts: int) -> bool:
        """The next `size` in-order bytes of `side` arrived; True if they needed no look (inside a
        body of known length that goes on after them): then they are counted and `feed` must not
        get them. False: nothing happened, `feed` them.

        Most packets of a large response are body: this spares the engine a copy of their
        bytes and the parser a call that builds an empty list.
        """
        ...

    def gap(self, side: int, size: int) -> list[Message]:
        """`size` bytes (-1: unknown) are missing before the next feed of `side`.

        A known size comes from loss the reassembler gave up on, or from a
        truncated capture (snaplen): then the gap starts right after the bytes
        of the last feed and the next feed starts right after it.
        """
        ...

    def close(self, ts: int) -> list[Message]:
        """End of the connection: completes close-delimited and cut messages."""
        ...


class DatagramParser(Parser, Protocol):
    """A parser of a datagram protocol (UDP): one call per datagram."""

    def datagram(self, side: int, data: bytes, ts: int, length: int) -> list[Message]:
        """One datagram; `length` is its size on the wire (> len(data) when the capture cut it)."""
        ...


Detector = Callable[[bytes, int], "Parser | None"]

# Control characters become visible escapes so a stored value never carries raw
# terminal/NUL bytes; invalid UTF-8 becomes \xNN through backslashreplace.
_CONTROL = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F)}


_UNSAFE = re.compile(rb"[^\x20-\x7e]")


def safe_text(raw: bytes | bytearray, cap: int = 1024) -> str:
    """Attacker-controlled bytes -> a bounded, printable str (never raises)."""
    head = raw[:cap]
    if _UNSAFE.search(head) is None:  # the common case: printable ASCII
        text = head.decode("ascii")
    else:
        text = bytes(head).decode("utf-8", "backslashreplace").translate(_CONTROL)
    return text + "..." if len(raw) > cap else text
