"""The Redis engine's key layout and its server-side (Lua) scripts.

Every key of one room carries the room's hash tag (`{room}`), so a room
lives on one shard, and every script touches the keys of one slot (what a
Redis Cluster requires; the relay-wide keys live wherever they hash). A
room's seq, epoch and stream change only inside SEQUENCE, one script call
per batch of the room's messages, which Redis runs atomically: no two
hosts ever get the same seq, and the channel carries the batches in seq
order.

    cr:epoch                   the relay's epoch (clients see it in `welcome`)
    cr:{room}:seq              the room's last seq (INCRBY per batch)
    cr:{room}:epoch            bumped when the seq key was lost (flush, failover)
    cr:{room}:log              capped stream; entry id `<seq>-0`, field b = msg body;
                               expires --room-ttl after the room empties (PERSIST on use)
    cr:{room}:mem              zset: "worker<TAB>conn" of each member, score = join time
    cr:{room}:quiet            "1" while the room is past --presence-limit
    cr:{room}:ch               pub/sub channel: the room's msgs and presence (sharded
                               pub/sub in a cluster: SPUBLISH/SSUBSCRIBE)
    cr:{room}:rid              cluster only: replication id of the primary that last
                               sequenced the room (SEQUENCE_CLUSTER)
    cr:rooms                   set of rooms with members relay-wide (--max-rooms counts it)
    cr:clients                 hash "worker<TAB>conn" -> msgpack client record
    cr:nick:<nick_key>         "worker<TAB>conn" of the nick's holder (SET NX)
    cr:workers                 hash worker -> host that holds it
    cr:hosts                   hash host -> ms it started
    cr:lease:<host>            exists while the host lives (PX, renewed)
    cr:host:<host>:clients     set of that host's client keys (for its cleanup)
    cr:host:<host>:ch          channel: replies for that host's workers
    cr:cleanup:{cr:lease:<host>}  SET NX by the host that removes a dead host's clients
    cr:all                     channel: announcements to every host (bans, blocks)
    cr:ip:<ip_key>             set of "worker<TAB>conn" connected from that address (IP bans)
    cr:ban:<kind>              hash key -> msgpack [until, by, reason]
    cr:af:{cr:blocks}:<ip_key>  failed passwords within the window (INCR, PX)
    cr:blocks                  hash ip_key -> until (ms) of password blocks
"""

from __future__ import annotations

from transports.validate import nick_key

PREFIX = "cr:"
ALL_CHANNEL = PREFIX + "all"


def room_key(room: str, part: str) -> str:
    """A key of one room, hash-tagged so all of the room's keys share a slot.

    Redis hashes what lies between a key's first `{` and the first `}` after
    it. Room names are `[A-Za-z0-9_.#-]{1,64}` (transports.validate.ROOM_RE,
    checked before any request reaches the hub), so a name holds neither
    brace and the tag is exactly the room's name (tests/integration/test_redis_engine.py).
    """
    return f"{PREFIX}{{{room}}}:{part}"


def ckey(key: tuple[str, int]) -> str:
    """A client's key in Redis: "worker<TAB>conn"."""
    return f"{key[0]}\t{key[1]}"


def parse_ckey(raw: bytes | str) -> tuple[str, int]:
    worker, conn = (raw.decode() if isinstance(raw, bytes) else raw).split("\t")
    return worker, int(conn)


def nick_rkey(nick: str) -> str:
    """The key that holds a nick's owner (nicks compare case-insensitively)."""
    return f"{PREFIX}nick:{nick_key(nick)}"


def ip_rkey(ip: str) -> str:
    """The set of clients connected from an address (as ip_key() gives it)."""
    return f"{PREFIX}ip:{ip}"


def host_key(host: str, part: str) -> str:
    return f"{PREFIX}host:{host}:{part}"


def lease_rkey(host: str) -> str:
    return f"{PREFIX}lease:{host}"


def cleanup_rkey(host: str) -> str:
    """The lock of a dead host's cleanup, tagged with its lease key's name: Redis
    hashes a key without braces whole, so `x{K}` shares K's slot (one slot per
    script in a cluster). Host names hold no braces (hostnames cannot)."""
    return f"{PREFIX}cleanup:{{{lease_rkey(host)}}}"


BLOCKS = PREFIX + "blocks"


def af_rkey(ip_key: str) -> str:
    """An address's failed-password count, in cr:blocks' slot (AUTH_FAIL uses both)."""
    return f"{PREFIX}af:{{{BLOCKS}}}:{ip_key}"


# KEYS: seq, epoch, log.  ARGV: channel, maxlen, floor (the caller's last known
# seq of the room), now_ms, the published item list (msgpack), body 1..n.
# Returns {first seq, room epoch, 1 if this batch started a new epoch}.
#
# A missing seq key with the room's epoch present means the counter was lost
# (flush, failover that lost writes): the room starts a new epoch and its seq
# continues above anything known (the caller's floor, the stream's newest
# entry, else the clock in ms), so a seq a client saw is never handed out
# again; clients see the jump as a gap that history cannot fill.
SEQUENCE = """
local n = #ARGV - 5
local seq = redis.call('GET', KEYS[1])
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
local fresh = 0
local floor = tonumber(ARGV[3])
if not seq then
  local base = floor
  local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
  if last[1] then
    base = math.max(base, tonumber(string.match(last[1][1], '^(%d+)')))
  end
  if epoch > 0 then
    fresh = 1
    if base == 0 then base = tonumber(ARGV[4]) end
  end
  epoch = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], string.format('%d', base))
elseif tonumber(seq) < floor then
  redis.call('SET', KEYS[1], string.format('%d', floor))
end
redis.call('PERSIST', KEYS[3])
local last = redis.call('INCRBY', KEYS[1], n)
local first = last - n + 1
for i = 1, n do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2],
             string.format('%d-0', first + i - 1), 'b', ARGV[5 + i])
end
redis.call('PUBLISH', ARGV[1], 'm' .. string.format('%d', first) .. '\\n' .. ARGV[5])
return {first, epoch, fresh}
"""

# KEYS: seq, epoch.  ARGV: floor.  Raises the room's seq to at least `floor`
# (a worker re-announcing what its clients saw after a restart).
RAISE = """
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
if seq < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], '1') end
end
return 1
"""

# KEYS: count key, blocks hash.  ARGV: ip key, failures, window ms, block ms, now ms.
# Returns the block's end (ms) when this failure starts one, else 0.
AUTH_FAIL = """
local blocked = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if blocked > tonumber(ARGV[5]) then return 0 end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
if n >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  local untl = tonumber(ARGV[5]) + tonumber(ARGV[4])
  redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', untl))
  return untl
end
return 0
"""

# KEYS: cleanup lock, lease.  ARGV: this host, lock ms.  1 when this host won
# the cleanup of a host whose lease is gone (one winner per dead host).
CLAIM_CLEANUP = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

# KEYS: nick key.  ARGV: the holder.  Frees the nick only if `holder` has it.
RELEASE_NICK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: the rooms set (rooms with members, relay-wide).  ARGV: room, cap, force.
# {1, rooms} when the room is open (it was, or it fits under the cap, or
# force), {0, rooms} when the cap refuses a new room.
OPEN_ROOM = """
local n = redis.call('SCARD', KEYS[1])
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return {1, n} end
if ARGV[3] == '0' and n >= tonumber(ARGV[2]) then return {0, n} end
redis.call('SADD', KEYS[1], ARGV[1])
return {1, n + 1}
"""

# KEYS: the room's members, the room's stream.  ARGV: ttl ms.
# The last member left: the room's history expires after the TTL, unless
# someone joined meanwhile (any host); 1 when the room was empty.
# The relay-wide rooms set lives in another slot, so the caller takes the
# room out of it in the same pipeline, just before this, and puts it back
# when this says the room is not empty after all (redis_hosts.Hosts.vacate).
VACATE = """
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
if tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
return 1
"""

# Cluster mode only (redis_cluster.py): SEQUENCE with its channel sharded
# (SPUBLISH, so a room's traffic stays on the room's shard) and a prelude.
# KEYS[4] is the room's rid: the replication id of the primary that last
# sequenced the room. Replication is asynchronous, so a replica promoted by a
# failover may lack the dead primary's last batches, and its seq key would
# hand their seqs out again. When the rid differs, the room starts a new
# epoch with its seq raised by STALE_MARGIN above its last known seq (as if
# the key were lost), so no seq is ever reused: receivers see a jump, which
# history answers with `history_gap`. A failover therefore costs every busy
# room of the failed shard one such jump, lost writes or not.
STALE_MARGIN = 1_000_000
_CLUSTER_PRELUDE = """
local rid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or ''
local known = redis.call('GET', KEYS[4])
if known ~= rid then
  redis.call('SET', KEYS[4], rid)
  local old = redis.call('GET', KEYS[1])
  if known and old then
    ARGV[3] = string.format('%d', math.max(tonumber(ARGV[3]), tonumber(old)) + MARGIN)
    redis.call('DEL', KEYS[1])
  end
end
""".replace("MARGIN", str(STALE_MARGIN))
assert SEQUENCE.count("redis.call('PUBLISH'") == 1
SEQUENCE_CLUSTER = _CLUSTER_PRELUDE + SEQUENCE.replace("redis.call('PUBLISH'",
                                                       "redis.call('SPUBLISH'")
