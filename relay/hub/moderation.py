"""Operator requests (kick, ban, unban, mute, unmute) and what sanctions refuse.

The worker forwards these only for a connection that proved the operator
password, so the hub acts on them as given. Bans and mutes are the engine's
(the memory engine's live until the hub restarts); workers get the IP bans
and the failed-password blocks as a `_bans` item (on ANNOUNCE when they
change, on their own topic when they connect or resync) to refuse new
connections before any hello. A banned nick is held by its ban: taken, for
anyone who asks; a mute follows its person through a rename.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from relay.bus.wire import ANNOUNCE
from relay.hub.engine import Engine, Sanction, SanctionKind
from relay.hub.members import Membership
from relay.hub.replies import Body, ConnKey, Out, to
from transports.errors import error_body as error
from transports.validate import ip_key, nick_key

MAX_SANCTIONS = 10_000  # bans by nick, bans by IP, mutes: each list holds at most this many


def _why(by: str, reason: str) -> str:
    return f" by {by}" + (f": {reason}" if reason else "")


class Moderation:
    """The operator's requests, and the checks sanctions impose on everyone else."""

    def __init__(self, engine: Engine, members: Membership, clock: Callable[[], int]) -> None:
        self.engine = engine
        self.members = members
        self.clock = clock
        self.actions: Counter[str] = Counter()  # actions taken, for metrics

    # Checks -------------------------------------------------------------------

    def bans_body(self) -> Body:
        now = self.clock()
        body: Body = {"t": "_bans", "ips": {
            ip: s.until for ip, s in self.engine.sanctions("ip").items()
            if not s.until or s.until > now}}
        blocks = self.engine.auth_blocks(now)
        if blocks:  # addresses blocked after failed passwords (AuthGuard)
            body["blocks"] = blocks
        return body

    def any_bans(self) -> bool:
        """Whether a new worker needs a `_bans` item at all."""
        return bool(self.engine.sanctions("ip")) or bool(self.engine.auth_blocks(self.clock()))

    def refuse_banned(self, key: ConnKey, nick: str | None, ip: str, out: Out) -> bool:
        """Refuse a hello from a banned address or nick (True: refused, told why)."""
        engine, now = self.engine, self.clock()
        ban, what = None, ""
        if ip and engine.sanctions("ip"):
            ban, what = engine.sanction("ip", ip, now), f"your address {ip}"
        if ban is None and nick is not None and engine.sanctions("nick"):
            ban, what = engine.sanction("nick", nick_key(nick), now), f"the nick {nick}"
        if ban is None:
            return False
        body = error("banned", f"{what} is banned {ban.left(self.clock())}"
                     f"{_why(ban.by, ban.reason)}", "hello", by=ban.by)
        if ban.reason:
            body["reason"] = ban.reason
        to(out, key, body)
        return True

    def refuse_muted(self, key: ConnKey, ref: str, out: Out, **ctx: Any) -> bool:
        """Refuse a say or whisper from a muted client (True: refused, told why)."""
        if not self.engine.sanctions("mute"):
            return False
        mute = self.engine.sanction("mute", nick_key(self.members.rec(key).nick), self.clock())
        if mute is None:
            return False
        to(out, key, error("muted", f"you are muted {mute.left(self.clock())}"
                           f"{_why(mute.by, mute.reason)}; nobody got this", ref, **ctx))
        return True

    def nick_ban(self, nick: str) -> Sanction | None:
        """The ban holding `nick`, if one is in force."""
        if not self.engine.sanctions("nick"):
            return None
        return self.engine.sanction("nick", nick_key(nick), self.clock())

    def renamed(self, old: str, new: str) -> None:
        """A mute follows its person to the new nick."""
        if not self.engine.sanctions("mute"):
            return
        mute = self.engine.lift("mute", nick_key(old))
        if mute is not None:
            self.engine.set_sanction("mute", nick_key(new), mute, MAX_SANCTIONS + 1,
                                     self.clock())

    # Helpers ------------------------------------------------------------------

    def _cut(self, target: ConnKey, code: str, text: str, by: str, reason: str,
             out: Out) -> None:
        """Tell a client why it must go and forget it; its worker closes the connection."""
        extra: Body = {"by": by}
        if reason:
            extra["reason"] = reason
        to(out, target, error(code, text, None, **extra))
        self.members.leave(target, out, extra)

    def _notice(self, out: Out, key: ConnKey, text: str) -> None:
        if self.engine.client(key) is not None:
            to(out, key, {"t": "notice", "text": text})

    def _store(self, kind: SanctionKind, name: str, sanction: Sanction, key: ConnKey,
               ref: str, out: Out) -> bool:
        if self.engine.set_sanction(kind, name, sanction, MAX_SANCTIONS, self.clock()):
            return True
        to(out, key, error("bad_field", f"the {ref} list is full "
                           f"({MAX_SANCTIONS} entries); lift one first", ref))
        return False

    def _sanction_from(self, key: ConnKey, req: dict[str, Any]) -> Sanction:
        minutes = req.get("minutes")
        until = self.clock() + int(minutes) * 60_000 if minutes else 0
        return Sanction(until, self.members.rec(key).nick, str(req.get("reason") or ""))

    # Requests -----------------------------------------------------------------

    def op_kick(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self.members.client(worker, req, out)
        if key is None:
            return
        target = self.engine.nick_owner(str(req.get("nick")))
        if target is None:
            to(out, key, error("no_such_nick", f"no one is called {req.get('nick')}",
                               "kick", nick=req.get("nick")))
            return
        by, name = self.members.rec(key).nick, self.members.rec(target).nick
        reason = str(req.get("reason") or "")
        self._cut(target, "kicked", f"you were kicked{_why(by, reason)}", by, reason, out)
        self.actions["kick"] += 1
        self._notice(out, key, f"kicked {name}")

    def op_ban(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self.members.client(worker, req, out)
        if key is None:
            return
        engine = self.engine
        ban = self._sanction_from(key, req)
        ip = ip_key(str(req["ip"])) if req.get("ip") else None
        if ip is not None:
            if not self._store("ip", ip, ban, key, "ban", out):
                return
            what = f"address {ip}"
            victims = [k for k in engine.clients_at(ip) if k != key]
            out.append((ANNOUNCE, self.bans_body()))
        elif req.get("nick"):
            nick = str(req["nick"])
            if not self._store("nick", nick_key(nick), ban, key, "ban", out):
                return
            what = f"nick {nick}"
            holder = engine.nick_owner(nick)
            victims = [holder] if holder is not None and holder != key else []
        else:
            to(out, key, error("bad_field", "ban takes a nick or an ip", "ban"))
            return
        left = ban.left(self.clock())
        for victim in victims:
            self._cut(victim, "banned", f"you are banned ({what}) {left}"
                      f"{_why(ban.by, ban.reason)}", ban.by, ban.reason, out)
        self.actions["ban"] += 1
        own = ip is not None and self.members.rec(key).ip == ip
        self._notice(out, key, f"banned {what} {left}; {len(victims)} connection(s) closed"
                     + ("; it is your own address: you could not reconnect" if own else ""))

    def op_unban(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self.members.client(worker, req, out)
        if key is None:
            return
        ip = ip_key(str(req["ip"])) if req.get("ip") else None
        if ip is not None:
            found = self.engine.lift("ip", ip)
            what = f"address {ip}"
            out.append((ANNOUNCE, self.bans_body()))
        else:
            found = self.engine.lift("nick", nick_key(str(req.get("nick"))))
            what = f"nick {req.get('nick')}"
        self._notice(out, key, f"unbanned {what}" if found else f"{what} was not banned")

    def op_mute(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self.members.client(worker, req, out)
        if key is None:
            return
        nick = str(req.get("nick"))
        mute = self._sanction_from(key, req)
        if not self._store("mute", nick_key(nick), mute, key, "mute", out):
            return
        self.actions["mute"] += 1
        left = mute.left(self.clock())
        target = self.engine.nick_owner(nick)
        if target is not None:
            self._notice(out, target, f"you are muted {left}{_why(mute.by, mute.reason)}")
        self._notice(out, key, f"muted {nick} {left}"
                     + ("" if target is not None else " (not connected now)"))

    def op_unmute(self, worker: str, req: dict[str, Any], out: Out) -> None:
        key = self.members.client(worker, req, out)
        if key is None:
            return
        nick = str(req.get("nick"))
        found = self.engine.lift("mute", nick_key(nick))
        target = self.engine.nick_owner(nick)
        if found is not None and target is not None:
            self._notice(out, target, f"you may speak again ({self.members.rec(key).nick})")
        self._notice(out, key, f"unmuted {nick}" if found else f"{nick} was not muted")

