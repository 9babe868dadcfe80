"""Durable history (`--history-db PATH`): rooms, seq and epoch survive a restart.

The hub keeps history in memory (HubState's rings) and this store is a
write-behind copy of it in SQLite, so a hub started on the same file comes
back with every room's seq and its newest `keep` messages, and with the same
epoch. A client that resumes across the restart then gets exactly what it
missed instead of `history_gap`.

Why it is shaped this way:

- The hub sequences thousands of messages a second, so a message is only
  staged (a list append) when it is sequenced; `commit()` writes every staged
  message in ONE transaction, once per hub batch. The hub commits *before* it
  publishes the batch: a message a client has seen is always on disk, so a
  hub that dies between the two can never hand out the same seq twice.
- WAL with synchronous=NORMAL: a commit is a sequential append to the WAL
  without fsync. That survives a killed process (the OS has the bytes); a
  power cut may lose the last commits, never corrupt the file.
- EXCLUSIVE locking: a second hub opening the same file fails fast with
  "database is locked" instead of interleaving seqs with the first.
- Pruning keeps `keep` messages per room, but not on every commit: rooms
  written since the last prune are trimmed at most every PRUNE_INTERVAL
  seconds (one indexed range delete per room).
- Bodies are stored as msgpack, exactly as the hub holds them (no schema per
  field: the body is what clients get back).
- Loading is lazy (`load_room`): the hub asks for a room when it is first
  used, so a big file cannot hold up the start. The file keeps no more than
  memory does: what the hub evicts (`--history-bytes`) or forgets
  (`--room-ttl`) is trimmed here at the next prune (`trim`, `forget`), and
  `forget_except` drops the messages of rooms nobody used for a whole TTL
  after a start. The `rooms` table keeps every room's seq even then (a few
  bytes on disk each), so a forgotten room continues its seq, never reuses one.

Errors: `open()` raises `HistoryStoreError` with the path and the reason.
A write that fails later (disk full) is the caller's to log; the staged
messages are kept and retried with the next commit, up to MAX_STAGED.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import msgpack

PRUNE_INTERVAL = 1.0      # seconds between trims of the rooms written since the last one
MAX_STAGED = 1_000_000    # staged bodies kept while the disk refuses writes, then dropped
BUSY_TIMEOUT = 2.0        # seconds to wait for a lock (a previous hub still closing)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rooms (room TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS messages ("
    " room TEXT NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL,"
    " PRIMARY KEY (room, seq)) WITHOUT ROWID",
)

Body = dict[str, Any]


class HistoryStoreError(Exception):
    """The history database cannot be opened or used (path and reason in the text)."""


class RoomHistory(NamedTuple):
    seq: int            # the room's latest seq (0: no message ever)
    messages: list[Body]  # its newest messages, oldest first, ending at `seq`


def _pack(body: Body) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _create_private(path: str) -> None:
    """Create the file 0600 if it is new: chat history is for the relay's owner.

    SQLite gives the -wal, -shm and -journal files it makes the mode of the
    database file, so this covers all of them, whatever the process umask.
    An existing file keeps the mode its owner chose.
    """
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))


class HistoryStore:
    """One hub's SQLite history file; use from one thread (the hub's loop)."""

    def __init__(self, db: sqlite3.Connection, path: str, keep: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.path = path
        self.keep = max(0, keep)
        self.clock = clock
        self._staged: list[Body] = []
        self._dirty: dict[str, int] = {}  # room -> newest seq written since the last prune
        self._floor: dict[str, int] = {}  # room -> first seq the hub still keeps (trim)
        self._next_prune = clock() + PRUNE_INTERVAL
        self.commits = 0
        self.written = 0
        self.skipped = 0  # bodies that could not be stored (never seen from a real hub)

    @classmethod
    def open(cls, path: str, keep: int = 1000, clock: Callable[[], float] = time.monotonic,
             timeout: float = BUSY_TIMEOUT) -> HistoryStore:
        """Open (or create) the file at `path`, keeping `keep` messages per room.

        Raises:
            HistoryStoreError: the file cannot be created, is not a database,
                or another relay holds it.
        """
        try:
            _create_private(path)
            db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        except OSError as exc:
            raise HistoryStoreError(f"cannot open history db {path}: {exc.strerror}") from None
        except sqlite3.Error as exc:
            raise HistoryStoreError(f"cannot open history db {path}: {exc}") from None
        try:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise HistoryStoreError(f"history db {path}: cannot use WAL (got {mode})")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now, not at first write
            for stmt in _SCHEMA:
                db.execute(stmt)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.close()
            reason = "another relay is using it" if "locked" in str(exc) else str(exc)
            raise HistoryStoreError(f"cannot use history db {path}: {reason}") from None
        except HistoryStoreError:
            db.close()
            raise
        return cls(db, path, keep, clock)

    # Epoch -----------------------------------------------------------------------

    def epoch(self, default: int) -> int:
        """The stored hub epoch; stores `default` if the file has none yet."""
        row = self.db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
        if row is not None:
            return int(row[0])
        self.db.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?)", (default,))
        return default

    # Reading ---------------------------------------------------------------------

    def load(self) -> dict[str, RoomHistory]:
        """Every room's seq and newest `keep` messages (oldest first).

        Only the contiguous run of messages that ends at the room's seq is
        returned: the hub computes where history starts from its length.
        Trims every room first (`--history` may have shrunk since the last run).
        """
        self.prune_all()
        rooms: dict[str, RoomHistory] = {}
        for room, seq in self.db.execute("SELECT room, seq FROM rooms").fetchall():
            rows = self.db.execute(
                "SELECT seq, body FROM messages WHERE room=? AND seq<=? "
                "ORDER BY seq DESC LIMIT ?", (room, seq, self.keep)).fetchall()
            messages: list[Body] = []
            want = seq
            for mseq, blob in rows:
                if mseq != want:
                    break  # a hole: what lies before it cannot be served as history
                body = _unpack(blob)
                if not isinstance(body, dict):
                    break
                messages.append(body)
                want -= 1
            messages.reverse()
            rooms[str(room)] = RoomHistory(int(seq), messages)
        return rooms

    def load_room(self, room: str) -> RoomHistory | None:
        """One room's seq and newest `keep` messages, or None if the file never saw it.

        Like `load`, only the run that ends at the room's seq comes back; what
        lies beyond `keep` is trimmed at the next prune.
        """
        row = self.db.execute("SELECT seq FROM rooms WHERE room=?", (room,)).fetchone()
        if row is None:
            return None
        seq = int(row[0])
        floor = self._floor.get(room, 0)  # trimmed or forgotten, not yet pruned
        rows = self.db.execute(
            "SELECT seq, body FROM messages WHERE room=? AND seq<=? AND seq>=? "
            "ORDER BY seq DESC LIMIT ?", (room, seq, floor, self.keep)).fetchall()
        messages: list[Body] = []
        want = seq
        for mseq, blob in rows:
            body = _unpack(blob) if mseq == want else None
            if not isinstance(body, dict):
                break  # a hole (or a bad row): what lies before it cannot be served
            messages.append(body)
            want -= 1
        messages.reverse()
        self._dirty[room] = max(seq, self._dirty.get(room, 0))
        return RoomHistory(seq, messages)

    # Writing ---------------------------------------------------------------------

    def stage(self, body: Body) -> None:
        """Remember one sequenced msg body for the next commit (cheap: a list append)."""
        self._staged.append(body)

    @property
    def staged(self) -> int:
        return len(self._staged)

    def append(self, bodies: Iterable[Body]) -> None:
        """Stage `bodies` and commit them in one transaction."""
        self._staged.extend(bodies)
        self.commit()

    def commit(self) -> None:
        """Write every staged body (and each room's new seq) in one transaction.

        Raises:
            sqlite3.Error: the write failed; the bodies stay staged for the
                next commit (bounded by MAX_STAGED).
        """
        staged = self._staged
        if staged:
            rows = self._rows(staged)
            seqs: dict[str, int] = {}
            for room, seq, _ in rows:
                if seq > seqs.get(room, 0):
                    seqs[room] = seq
            db = self.db
            try:
                db.execute("BEGIN")
                db.executemany(
                    "INSERT OR REPLACE INTO messages (room, seq, body) VALUES (?, ?, ?)", rows)
                db.executemany(
                    "INSERT INTO rooms (room, seq) VALUES (?, ?) ON CONFLICT(room) "
                    "DO UPDATE SET seq=max(seq, excluded.seq)", list(seqs.items()))
                db.execute("COMMIT")
            except sqlite3.Error:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if len(staged) > MAX_STAGED:
                    del staged[: len(staged) - MAX_STAGED]
                raise
            staged.clear()
            self.commits += 1
            self.written += len(rows)
            for room, seq in seqs.items():
                self._dirty[room] = max(seq, self._dirty.get(room, 0))
        if self.due:
            self.prune()

    def _rows(self, bodies: list[Body]) -> list[tuple[str, int, bytes]]:
        """(room, seq, packed body) for each body; one that cannot be stored is counted
        and skipped, so it can never block every later commit."""
        rows = []
        for body in bodies:
            try:
                rows.append((str(body["room"]), int(body["seq"]), _pack(body)))
            except (KeyError, TypeError, ValueError, OverflowError):
                self.skipped += 1
        return rows

    def trim(self, room: str, first_seq: int) -> None:
        """The hub keeps `room` only from `first_seq` on: drop the rest at the next prune."""
        if first_seq > self._floor.get(room, 0):
            self._floor[room] = first_seq

    def forget(self, room: str, seq: int) -> None:
        """The hub forgot `room` (at `seq`): its messages go at the next prune, its seq stays."""
        self.trim(room, seq + 1)

    def forget_except(self, rooms: Iterable[str]) -> int:
        """Drop the messages of every room not in `rooms`; returns how many rows went.

        The hub calls this once, a whole `--room-ttl` after it started: a room
        it did not load by then was idle for at least that long.
        """
        db = self.db
        db.execute("BEGIN")
        try:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS keep_rooms (room TEXT PRIMARY KEY)")
            db.execute("DELETE FROM temp.keep_rooms")
            db.executemany("INSERT OR IGNORE INTO temp.keep_rooms (room) VALUES (?)",
                           [(r,) for r in rooms])
            before = db.total_changes
            db.execute("DELETE FROM messages WHERE room NOT IN (SELECT room FROM temp.keep_rooms)")
            removed = db.total_changes - before
            db.execute("DELETE FROM temp.keep_rooms")
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return removed

    @property
    def due(self) -> bool:
        """Whether a prune is due (rooms written or trimmed, and PRUNE_INTERVAL passed)."""
        return bool(self._dirty or self._floor) and self.clock() >= self._next_prune

    def prune(self, rooms: Iterable[str] | None = None) -> int:
        """Trim rooms to their newest `keep` messages and to what the hub still keeps
        (`trim`); returns how many rows went.

        Args:
            rooms: the rooms to trim to `keep`; None trims those written since the
                last prune. Rooms the hub trimmed are always included.
        """
        if rooms is None:
            targets = {room: seq - self.keep for room, seq in self._dirty.items()}
        else:
            wanted = set(rooms)
            targets = {str(r): int(s) - self.keep for r, s in
                       self.db.execute("SELECT room, seq FROM rooms").fetchall() if r in wanted}
        for room, first in self._floor.items():
            targets[room] = max(targets.get(room, first - 1), first - 1)
        self._dirty.clear()
        self._floor.clear()
        self._next_prune = self.clock() + PRUNE_INTERVAL
        if not targets:
            return 0
        db = self.db
        db.execute("BEGIN")
        before = db.total_changes
        db.executemany("DELETE FROM messages WHERE room=? AND seq<=?", list(targets.items()))
        removed = db.total_changes - before
        db.execute("COMMIT")
        return removed

    def prune_all(self) -> int:
        """Trim every room (at open: `--history` may have shrunk since the last run)."""
        names = [str(r) for (r,) in self.db.execute("SELECT room FROM rooms").fetchall()]
        return self.prune(names)

    def close(self) -> None:
        """Commit what is staged, fold the WAL into the main file and close."""
        try:
            self.commit()
            self.prune()
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self.db.close()
