"""Durable history: the SQLite store alone, the hub state on top of it, a real restart."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

import psutil
import pytest

from relay.hub.historydb import HistoryStore, HistoryStoreError
from relay.hub.state import HubState, Out
from tests.relayproc import RelayProcess
from tests.wire import NativePeer


def msg(room: str, seq: int, text: str | None = None) -> dict[str, Any]:
    return {"t": "msg", "room": room, "seq": seq, "ts": 1000 + seq, "from": "ann",
            "text": text or f"{room}-{seq}"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# The store -----------------------------------------------------------------------


def test_empty_file_loads_nothing_and_keeps_its_epoch(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    store = HistoryStore.open(path)
    assert store.load() == {}
    assert store.epoch(111) == 111
    assert store.epoch(222) == 111
    store.close()
    again = HistoryStore.open(path)
    assert again.epoch(333) == 111
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()


def test_staged_messages_are_written_by_commit_only(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    store = HistoryStore.open(path, keep=10)
    for seq in range(1, 4):
        store.stage(msg("lobby", seq))
    assert store.staged == 3
    assert store.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    store.commit()
    assert store.staged == 0 and store.commits == 1 and store.written == 3
    store.append([msg("dev", 1), msg("lobby", 4)])
    assert store.commits == 2
    store.close()
    loaded = HistoryStore.open(path, keep=10).load()
    assert loaded["lobby"].seq == 4
    assert [m["seq"] for m in loaded["lobby"].messages] == [1, 2, 3, 4]
    assert loaded["lobby"].messages[0] == msg("lobby", 1)
    assert loaded["dev"] == (1, [msg("dev", 1)])


def test_prune_keeps_the_newest_n_per_room_periodically(tmp_path: Path) -> None:
    clock = FakeClock()
    store = HistoryStore.open(str(tmp_path / "h.db"), keep=5, clock=clock)
    store.append([msg("a", s) for s in range(1, 21)] + [msg("b", s) for s in range(1, 4)])
    count = "SELECT count(*) FROM messages WHERE room=?"
    assert store.db.execute(count, ("a",)).fetchone()[0] == 20  # not yet: interval not over
    clock.now += 5.0
    store.commit()  # nothing staged, but a prune is due
    assert store.db.execute(count, ("a",)).fetchone()[0] == 5
    assert store.db.execute(count, ("b",)).fetchone()[0] == 3
    loaded = store.load()
    assert [m["seq"] for m in loaded["a"].messages] == [16, 17, 18, 19, 20]
    assert loaded["a"].seq == 20
    store.close()


def test_a_smaller_history_setting_trims_at_load(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    store = HistoryStore.open(path, keep=100)
    store.append(msg("r", s) for s in range(1, 51))
    store.close()
    small = HistoryStore.open(path, keep=3)
    assert [m["seq"] for m in small.load()["r"].messages] == [48, 49, 50]
    assert small.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 3
    small.close()


def test_load_returns_only_the_run_that_ends_at_seq(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    store = HistoryStore.open(path, keep=100)
    store.append([msg("r", 1), msg("r", 2), msg("r", 4), msg("r", 5)])  # 3 is missing
    loaded = store.load()["r"]
    assert loaded.seq == 5 and [m["seq"] for m in loaded.messages] == [4, 5]
    store.close()


def test_a_second_relay_cannot_use_the_same_file(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    first = HistoryStore.open(path)
    with pytest.raises(HistoryStoreError, match="another relay"):
        HistoryStore.open(path, timeout=0.05)
    first.close()
    HistoryStore.open(path).close()  # free again


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(HistoryStoreError, match="junk.db"):
        HistoryStore.open(str(bad))
    with pytest.raises(HistoryStoreError):
        HistoryStore.open(str(tmp_path / "no" / "such" / "dir" / "h.db"))


def test_a_body_that_cannot_be_stored_is_skipped_not_blocking(tmp_path: Path) -> None:
    store = HistoryStore.open(str(tmp_path / "h.db"), keep=10)
    store.stage(msg("r", 1))
    store.stage({"t": "msg", "room": "r", "seq": 2, "text": object()})  # cannot be packed
    store.stage({"t": "msg", "seq": 3})  # no room
    store.commit()
    assert store.skipped == 2 and store.written == 1 and store.staged == 0
    assert store.load()["r"].seq == 1
    store.close()


def test_a_failed_write_keeps_the_messages_for_the_next_commit(tmp_path: Path) -> None:
    store = HistoryStore.open(str(tmp_path / "h.db"), keep=10)
    store.db.execute("DROP TABLE rooms")  # the write fails half-way through its transaction
    store.stage(msg("r", 1))
    with pytest.raises(sqlite3.Error):
        store.commit()
    assert store.staged == 1 and not store.db.in_transaction
    assert store.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    store.db.execute("CREATE TABLE rooms (room TEXT PRIMARY KEY, seq INTEGER NOT NULL)")
    store.commit()
    assert store.load()["r"].seq == 1
    store.close()


def test_thousands_of_messages_commit_in_one_transaction_quickly(tmp_path: Path) -> None:
    import time

    store = HistoryStore.open(str(tmp_path / "h.db"), keep=1000)
    start = time.perf_counter()
    for batch in range(20):
        store.append(msg(f"room{batch % 4}", batch // 4 * 500 + s) for s in range(1, 501))
    elapsed = time.perf_counter() - start
    assert store.commits == 20 and store.written == 10_000
    assert elapsed < 5.0, f"10k messages took {elapsed:.2f} s"
    store.close()


# HubState on top of the store ------------------------------------------------------


def hub_with(store: HistoryStore, history_len: int = 5) -> HubState:
    return HubState(epoch=store.epoch(42), history_len=history_len, store=store,
                    clock=lambda: 7)


def say(state: HubState, worker: str, conn: int, text: str, out: Out) -> None:
    state.handle(worker, {"op": "say", "c": conn, "room": "lobby", "text": text}, out, 0.0)


def test_hub_state_comes_back_with_seq_and_history(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    store = HistoryStore.open(path, keep=5)
    state = hub_with(store)
    out: Out = []
    state.handle("w1", {"op": "hb", "hello": True}, out, 0.0)
    state.handle("w1", {"op": "hello", "c": 1, "nick": "ann", "rooms": ["lobby"]}, out, 0.0)
    for i in range(8):
        say(state, "w1", 1, f"t{i}", out)
    assert store.staged == 8
    store.commit()
    store.close()

    store2 = HistoryStore.open(path, keep=5)
    state2 = hub_with(store2)
    assert state2.epoch == state.epoch == 42
    assert state2.rooms == {}  # lazy: a room comes back when it is first used
    out = []
    state2.handle("w2", {"op": "hb", "hello": True}, out, 0.0)
    state2.handle("w2", {"op": "hello", "c": 1, "nick": "ann", "rooms": [],
                         "resume": {"lobby": 6}}, out, 0.0)
    room = state2.rooms["lobby"]
    assert room.seq == 8 and room.first_seq == 4
    assert [m["text"] for m in room.history] == ["t3", "t4", "t5", "t6", "t7"]
    bodies = [item[1] for _, item in out if isinstance(item, list) and item[0] == 1]
    joined = [b for b in bodies if b.get("t") == "joined"]
    assert joined[0]["seq"] == 8
    assert [b["seq"] for b in bodies if b.get("t") == "msg"] == [7, 8]
    assert not [b for b in bodies if b.get("code") == "history_gap"]
    out = []
    say(state2, "w2", 1, "after", out)
    assert state2.rooms["lobby"].seq == 9
    store2.close()


# A real relay, stopped and started again on the same file -------------------------------


def test_resume_across_a_relay_restart_gets_exactly_the_missed(tmp_path: Path) -> None:
    db = str(tmp_path / "history.db")
    args = ["--rate-limit", "0", "--history-db", db]
    first = RelayProcess(workers=2, args=args).start()
    try:
        talker = NativePeer.joined(first.port, "talker")
        away = NativePeer.joined(first.port, "away")
        for i in range(3):
            talker.send({"t": "say", "room": "lobby", "text": f"seen{i}"})
        last = away.msgs("lobby", 3)[-1]["seq"]
        away.close()
        for i in range(4):
            talker.send({"t": "say", "room": "lobby", "text": f"missed{i}"})
        talker.msgs("lobby", 7)
        talker.close()
    finally:
        assert first.stop(signal.SIGTERM) == 0
    check = HistoryStore.open(db)  # the relay let go of the file, and it says seq 7
    assert check.load()["lobby"].seq == 7
    check.close()

    second = RelayProcess(workers=2, args=args).start()
    try:
        back = NativePeer(second.port)
        back.send({"t": "hello", "v": 1, "nick": "away", "rooms": [],
                   "resume": {"lobby": last}})
        back.expect(lambda m: m.get("t") == "welcome")
        assert back.expect(lambda m: m.get("t") == "joined")["seq"] == 7
        got = back.msgs("lobby", 4)
        assert [m["seq"] for m in got] == [4, 5, 6, 7]
        assert [m["text"] for m in got] == [f"missed{i}" for i in range(4)]
        back.send({"t": "say", "room": "lobby", "text": "new life"})
        live = back.msgs("lobby", 1)[0]
        assert (live["seq"], live["text"]) == (8, "new life")
        rest = back.drain(0.3)
        assert not [b for b in rest if isinstance(b, dict) and b.get("t") == "error"], rest
        back.send({"t": "history", "room": "lobby", "limit": 3})
        page = back.expect(lambda m: m.get("t") == "history")
        assert [m["text"] for m in page["messages"]] == ["missed2", "missed3", "new life"]
    finally:
        second.stop()


def test_a_killed_hub_comes_back_with_its_history(tmp_path: Path) -> None:
    import os

    db = str(tmp_path / "history.db")
    relay = RelayProcess(workers=1, args=["--rate-limit", "0", "--history-db", db]).start()
    try:
        a = NativePeer.joined(relay.port, "stays")
        for i in range(5):
            a.send({"t": "say", "room": "lobby", "text": f"pre{i}"})
        assert [m["seq"] for m in a.msgs("lobby", 5)] == [1, 2, 3, 4, 5]
        old_hub = relay.hub_pid()
        os.kill(old_hub, signal.SIGKILL)  # no chance to commit or close anything

        def restarted() -> bool:
            hubs = []
            for proc in relay.children():
                try:
                    if "_hub" in proc.cmdline():
                        hubs.append(proc.pid)
                except psutil.Error:  # the old hub, a zombie until the supervisor reaps it
                    continue
            return bool(hubs) and old_hub not in hubs

        relay.wait_for(restarted, timeout=10)
        fresh = NativePeer(relay.port)
        fresh.send({"t": "hello", "v": 1, "nick": "late", "rooms": [], "resume": {"lobby": 2}})
        fresh.expect(lambda m: m.get("t") == "welcome", timeout=10)
        assert fresh.expect(lambda m: m.get("t") == "joined")["seq"] == 5
        assert [m["text"] for m in fresh.msgs("lobby", 3)] == ["pre2", "pre3", "pre4"]
        fresh.send({"t": "say", "room": "lobby", "text": "post"})
        assert fresh.msgs("lobby", 1)[0]["seq"] == 6
    finally:
        relay.stop()
