"""Taking messages off the bus: whole drains between send rounds, room batches within one.

Between rounds the bus thread takes everything pending, up to a round's byte
budget (fanout.take_carried). A send round to a big room is long: 10,000
members take 40-90 ms of sends on loopback. A message that arrives during it
used to wait for the round to end, then for a whole round of its own, so the
members written last were two rounds late (join-storm p99 over 100 ms). So
in the middle of a long round the bus thread looks again every
fanout.MID_ROUND_LOOK members, and members the round has not reached yet get
what came in the same send (fanout.Fanout.flush). Before each look it also
sends up what the worker's readers queued meanwhile (busloop.BusLoop._mid_round):
with one worker, a big room's own senders would otherwise wait for the round.

A look takes room batches only. The first message that is not one (a reply,
a receipt, a control item) ends the look and is kept for the next drain, so
replies and control items stay in bus order with the room traffic around
them: a reply never takes effect in the middle of a round.
"""

from __future__ import annotations

from collections.abc import Callable

import zmq

from relay.worker.fanout import Fanout

Frames = list[bytes]  # topic, header, body
ROOM_TOPIC = b"r"  # the first byte of every room's topic (wire.room_topic)
MAX_DRAIN = 10000  # bus messages one drain takes at most (the loop comes back for more)
MAX_LOOK = 100  # room batches one look in the middle of a round takes at most


class BusDrain:
    def __init__(self, fanout: Fanout, handle: Callable[[bytes, bytes, bytes], None]) -> None:
        self.fanout = fanout
        self.handle = handle  # one bus message; contains its own failures
        self.kept: Frames | None = None  # taken during a look, handled at the next drain
        self.polled = True  # False while fan-out pacing leaves room traffic on the bus

    def drain(self, sock: zmq.Socket[bytes]) -> None:
        """Handle pending bus messages until none is left or a round's byte budget
        is used (a worker that is behind must not hand its members its whole
        backlog at once), then send each client its share in one round."""
        try:
            for _ in range(MAX_DRAIN):
                if not self.fanout.take_carried():
                    return
                frames = self._take(sock)
                if frames is None:
                    return
                if len(frames) == 3:
                    self.handle(*frames)
        finally:
            self.fanout.flush_full_or_soon()

    def look(self, sock: zmq.Socket[bytes]) -> bool:
        """In the middle of a long round: take the room batches waiting, up to the
        first message that is not one. True when any was handled."""
        if not self.polled or self.kept is not None or self.fanout.carry:
            return False
        took = False
        for _ in range(MAX_LOOK):
            frames = self._take(sock)
            if frames is None:
                break
            if len(frames) != 3:
                continue
            if frames[0][:1] != ROOM_TOPIC:
                self.kept = frames
                break
            self.handle(*frames)
            took = True
        return took

    def _take(self, sock: zmq.Socket[bytes]) -> Frames | None:
        """The next bus message (the one a look kept first), or None."""
        if self.kept is not None:
            frames, self.kept = self.kept, None
            return frames
        try:
            return sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
