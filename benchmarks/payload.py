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
    ts = int(line[start + 2 : start + 2 + TS_DIGITS])
    rest = line[start + 3 + TS_DIGITS :].split(b" ", 2)
    if len(rest) < 3:
        raise ValueError("payload lacks sender id, counter or padding")
    head = HEADER_MIN + len(rest[0]) + len(rest[1]) + 2
    if len(line) - start != max(size, head):
        raise ValueError(f"payload is {len(line) - start} bytes, expected {max(size, head)}")
    return ts, rest[0], int(rest[1])
