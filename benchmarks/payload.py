"""What a benchmark message carries: send time, sender id, sender counter.

Layout (ASCII, so the text and IRC dialects carry it untouched):

    ~=<20-digit send time ns> <sender id> <counter> xxxx...   (padded to `size`)

The send time comes first at a fixed width so the native receiver, which
already has the room's seq, reads it with one slice; text and IRC receivers,
which have no seq, also split out the sender id and counter.
"""

from __future__ import annotations

MARK = "~="
MARK_B = b"~="
TS_DIGITS = 20
HEADER_MIN = len(MARK) + TS_DIGITS + 1


def make(ts_ns: int, sender: int, counter: int, size: int) -> str:
    """One payload; at least as long as its header, else padded to `size` chars."""
    head = f"{MARK}{ts_ns:0{TS_DIGITS}d} {sender} {counter} "
    if len(head) >= size:
        return head
    return head + "x" * (size - len(head))


def ts_of(text: str) -> int:
    """Send time of a payload string (raises ValueError when it is not one)."""
    return int(text[2 : 2 + TS_DIGITS])


def parse_line(line: bytes, start: int, size: int) -> tuple[int, bytes, int]:
    """(ts_ns, sender id, counter) of the payload that begins at `start` in `line`.

    The payload must run to the end of `line` with exactly the length `make`
    gives it, so a line that a relay split or glued to another one is caught.

    Raises:
        ValueError: the bytes there are not one whole, well-formed payload.
    """
    return parse_span(line, start, len(line), size)


def parse_span(line: bytes, start: int, end: int, size: int) -> tuple[int, bytes, int]:
    """`parse_line` of `line[:end]`, so that a receiver need not copy a line to drop its CR.

    Raises:
        ValueError: the bytes there are not one whole, well-formed payload.
    """
    rest = line[start + HEADER_MIN : end].split(b" ", 2)
    if len(rest) < 3:
        raise ValueError("payload lacks sender id, counter or padding")
    sender, counter = rest[0], rest[1]
    head = HEADER_MIN + len(sender) + len(counter) + 2
    want = size if size > head else head
    if end - start != want:
        raise ValueError(f"payload is {end - start} bytes, expected {want}")
    return int(line[start + 2 : start + 2 + TS_DIGITS]), sender, int(counter)
