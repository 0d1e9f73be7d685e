"""The hub's reads from Redis: snapshots, the change stream, owner liveness, polled status.

Where it sits: between Redis and :class:`~app.stream.hub.StreamHub`, which decides what
to do with what is read (:class:`~app.stream.mirror.Mirror` never touches Redis). The
change stream's ``XREAD BLOCK`` holds its connection, so it gets a client of its own;
everything else shares the service's client and reader.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from app.store import BalanceReader, Change, Keys, StateSnapshot

_READ_REFRESH_LUA = """
-- KEYS: seq, instances, then each account's status and lease; ARGV: oldest live heartbeat
-- (ms). One reply for any number of accounts: seq, the live instances, and the accounts'
-- lease values and last_message_at joined by \\31 (parsing thousands of replies was most
-- of an idle service's CPU). Read-only.
local leases, seen = {}, {}
for i = 3, #KEYS, 2 do
  seen[#seen + 1] = redis.call('HGET', KEYS[i], 'last_message_at') or ''
  leases[#leases + 1] = redis.call('GET', KEYS[i + 1]) or ''
end
return {
  redis.call('GET', KEYS[1]) or '0',
  redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf'),
  table.concat(leases, '\\31'),
  table.concat(seen, '\\31'),
}
"""


@dataclass(frozen=True, slots=True)
class Owners:
    """The instances alive now and the instance holding each account's lease."""

    instances: frozenset[str]
    lease_owner: dict[str, str]


@dataclass(frozen=True, slots=True)
class Polled:
    """What is not streamed: ``P:seq``, owner liveness and each account's
    ``last_message_at`` (accounts without one are left out)."""

    seq: int
    owners: Owners
    last_message_at: dict[str, str]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisSource:
    """Every Redis read of the hub. :meth:`open` before reading the stream."""

    def __init__(
        self, redis: aioredis.Redis, reader: BalanceReader, keys: Keys, block_ms: int
    ) -> None:
        self._redis = redis
        self._reader = reader
        self._keys = keys
        self.block_ms = block_ms
        self._stream_client: aioredis.Redis | None = None
        self._stream_reader: BalanceReader | None = None
        self._read_refresh = redis.register_script(_READ_REFRESH_LUA)

    def open(self) -> None:
        """The change stream's own connection, with room for the block in its timeout."""
        pool = self._redis.connection_pool
        kwargs = dict(pool.connection_kwargs)
        kwargs["socket_timeout"] = self.block_ms / 1000 + 10
        self._stream_client = aioredis.Redis(
            connection_pool=aioredis.ConnectionPool(
                connection_class=pool.connection_class, max_connections=2, **kwargs
            )
        )
        self._stream_reader = BalanceReader(self._stream_client, self._keys)

    async def close(self) -> None:
        if self._stream_client is not None:
            await self._stream_client.aclose()
            self._stream_client = None
            self._stream_reader = None

    async def run_id(self) -> str:
        """Changes whenever Redis restarts or fails over: its data may then be different."""
        assert self._stream_client is not None
        info: dict[str, Any] = await self._stream_client.info("server")
        return str(info.get("run_id", ""))

    async def snapshot(self, accounts: Sequence[str]) -> StateSnapshot:
        return await self._reader.snapshot(accounts)

    async def read_after(self, seq: int, count: int) -> list[Change]:
        """Block up to ``block_ms`` for changes after ``seq``."""
        assert self._stream_reader is not None
        return await self._stream_reader.read_after(seq, self.block_ms, count=count)

    async def changes_since(self, seq: int, limit: int) -> list[Change]:
        return await self._reader.changes_since(seq, limit=limit)

    async def poll(self, accounts: Sequence[str], lease_ms: int) -> Polled:
        """Which instances heartbeat within ``lease_ms``, who holds each account's lease,
        each account's ``last_message_at`` and ``P:seq``: one round trip, one reply."""
        keys = [self._keys.seq, self._keys.instances]
        for account in accounts:
            keys += (self._keys.status(account), self._keys.lease(account))
        oldest = int(time.time() * 1000) - lease_ms
        seq, instances, leases, seen = await self._read_refresh(keys=keys, args=[oldest])
        owners = _text(leases).split("\x1f") if accounts else []
        last = _text(seen).split("\x1f") if accounts else []
        return Polled(
            int(seq),
            Owners(
                frozenset(_text(m) for m in instances),
                {
                    account: value.rsplit(":", 1)[0]
                    for account, value in zip(accounts, owners, strict=True)
                    if value
                },
            ),
            {account: text for account, text in zip(accounts, last, strict=True) if text},
        )
