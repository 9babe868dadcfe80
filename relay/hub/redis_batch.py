"""One round trip of many commands, script calls included, without a SCRIPT EXISTS.

redis-py's `Script` queued on a pipeline makes the pipeline ask Redis
`SCRIPT EXISTS` before every `execute()`: a second round trip on each wake
of the hub. Here script calls are queued as plain EVALSHA by the script's
sha; only when Redis answers NOSCRIPT (it restarted, SCRIPT FLUSH, a
failover to a replica that never saw the script) is the script loaded and
those calls sent again, in their order, in one more round trip. A NOSCRIPT
call did not run, so sending it again never sequences anything twice.

The same shape works on redis-py's ClusterPipeline, which routes each
EVALSHA by its first key and queues no SCRIPT EXISTS at all (it leaves
NOSCRIPT to its caller, which is this): `script_load` on a cluster client
loads the script on every primary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoScriptError

from relay.hub.redis_link import Link


@dataclass(slots=True)
class Batch:
    """Commands for one round trip, in order: script calls and plain commands."""

    ops: list[tuple[Any, str, tuple[Any, ...]]] = field(default_factory=list)
    size: int = 0  # payload bytes queued, roughly (what a bound on the batch counts)

    def script(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Queue a call of a registered `Script` (its .sha and .script are used)."""
        self.ops.append((script, "", (len(keys), *keys, *args)))
        self.size += sum(len(a) for a in args if isinstance(a, bytes))

    def command(self, name: str, *args: Any) -> None:
        """Queue a plain command by its redis-py method name (e.g. "publish")."""
        self.ops.append((None, name, args))
        self.size += sum(len(a) for a in args if isinstance(a, bytes))

    def __len__(self) -> int:
        return len(self.ops)


def _text(script: Any) -> str:
    """A script's Lua source: redis-py's Script keeps it in .script, ours in .text."""
    text = getattr(script, "text", None)
    return text if isinstance(text, str) else str(script.script)


def _queue(p: Any, op: tuple[Any, str, tuple[Any, ...]]) -> None:
    script, name, args = op
    if script is not None:
        p.evalsha(script.sha, *args)
    else:
        getattr(p, name)(*args)


def execute(link: Link, batch: Batch) -> list[Any]:
    """Run `batch` in one non-transactional pipeline (each script call atomic by
    itself); results in order, errors as values. EngineUnavailable when Redis is
    (or just went) down."""
    ops = batch.ops
    if not ops:
        return []

    def go(r: Any) -> list[Any]:
        p = r.pipeline(transaction=False)
        for op in ops:
            _queue(p, op)
        res = list(p.execute(raise_on_error=False))
        missing = [i for i, x in enumerate(res) if isinstance(x, NoScriptError)]
        if missing:
            for script in {id(ops[i][0]): ops[i][0] for i in missing}.values():
                script.sha = r.script_load(_text(script))
            p = r.pipeline(transaction=False)
            for i in missing:
                _queue(p, ops[i])
            for i, x in zip(missing, p.execute(raise_on_error=False), strict=True):
                res[i] = x
        return res

    return link.run(go)
