"""The pool's Redis keys, and the Redis users that may touch them.

A pool lives under ``proxyrefresh:pool:{<namespace>/<name>}:<field>``
(proxyrefresh/pool.py says what each holds and how it scores); the runs
that merge into it are the fan-out core's business (fanout/store.py). Here
too are the ACL rules of a pool's consumer (``proxyrefresh pool grant``)
and of the live page's viewer, which reads the pools and the runs' counters.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from proxyrefresh.constants import RUNS
from proxyrefresh.redis_topology import CLUSTER_CLIENT_COMMANDS


@dataclass(frozen=True)
class PoolKeys:
    """The names of every key of one long-lived pool that runs merge into:
    ``<prefix>:pool:{<namespace>/<name>}:<field>``. The hash tag puts a pool
    in one slot, so its scripts may touch all of it atomically. What the
    members are, how they score and how they group is the user's business
    (proxyrefresh.pool, for the product's own pool); here are only the names."""

    namespace: str
    name: str
    prefix: str = RUNS.key_prefix

    def key(self, field: str) -> str:
        return f"{self.prefix}:pool:{{{self.namespace}/{self.name}}}:{field}"

    @property
    def entries(self) -> str:  # hash: member id -> its JSON
        return self.key("entries")

    @property
    def score(self) -> str:  # zset: member id -> score (best first, for exports)
        return self.key("score")

    @property
    def failing(self) -> str:  # set of member ids whose last outcome failed
        return self.key("failing")

    @property
    def last_ok(self) -> str:  # zset: member id -> when it last succeeded (max age)
        return self.key("last_ok")

    @property
    def latency(self) -> str:  # zset: member id -> latency (filters)
        return self.key("latency")

    @property
    def merged(self) -> str:  # hash: run uid -> batches merged so far, or "done"
        return self.key("merged")

    @property
    def clock(self) -> str:  # the virtual time of the last pick (fair selection)
        return self.key("clock")

    @property
    def events(self) -> str:  # pub/sub channel: size and usable after a change
        return self.key("events")

    def group(self, name: str) -> str:  # zset: member id -> virtual time of its next turn
        return self.key(f"group:{name}")

    def session(self, name: str) -> str:
        """string: the member id a sticky session keeps, for the session's
        life. The name is the client's: hashed, so any name makes a short
        key and none shows in Redis."""
        digest = hashlib.sha256(name.encode()).hexdigest()[:32]
        return self.key(f"session:{digest}")

    def fixed(self) -> list[str]:
        """Every key but the groups, in the order the scripts take them."""
        return [
            self.entries,
            self.score,
            self.failing,
            self.last_ok,
            self.latency,
            self.merged,
            self.clock,
            self.events,
        ]


# A pool's user (``proxyrefresh pool grant``) runs the pool's own scripts,
# which name its group keys as it goes: its keys go by pattern.
POOL_DENIED = ("-@dangerous", "-@admin", "-scan", "-randomkey", "-select", "-swapdb")


def pool_rules(keys: PoolKeys, secret: str) -> list[str]:
    """ACL SETUSER arguments for a pool's consumer: that pool's keys and
    channel, no dangerous or admin command."""
    pattern = keys.key("*")
    return ["reset", "on", f">{secret}", f"~{pattern}", "resetchannels", f"&{pattern}",
            "+@all", *POOL_DENIED, *CLUSTER_CLIENT_COMMANDS]  # fmt: skip


def viewer_rules(secret: str, prefix: str = RUNS.key_prefix) -> list[str]:
    """ACL SETUSER arguments for a viewer (``proxyrefresh ui``): read the
    pools' keys, subscribe to the runs' and pools' events, read the runs'
    per-chunk counters (numbers only: never a run's items or results); no
    write. Redis checks PSUBSCRIBE patterns literally, hence the two given."""
    return [
        "reset",
        "on",
        f">{secret}",
        f"~{prefix}:pool:*",
        f"~{prefix}:{{*}}:completed",
        f"~{prefix}:{{*}}:index_progress",
        "resetchannels",
        f"&{prefix}:{{*}}:events",
        f"&{prefix}:pool:{{*}}:events",
        "+@read",
        "+@pubsub",
        "+ping",  # the page's readiness (/readyz)
        "+eval",  # read-only scripts: every call inside obeys the same rules
        "+evalsha",
        "+script|load",
        "-@dangerous",
        *CLUSTER_CLIENT_COMMANDS,
    ]
