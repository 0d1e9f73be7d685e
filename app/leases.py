"""Account leases: exactly one instance owns an account's upstream socket at a time.

A lease is ``P:{acct}:lease = <random token>`` set with ``SET NX PX`` and renewed well
before it expires. The token doubles as the fencing token: every state write checks it
inside its Lua script, so a paused or partitioned former owner can never overwrite the
new owner's state. Instances announce themselves in ``P:instances`` (a sorted set of
heartbeats) so each can take only its fair share of the accounts.

Every acquisition also records its token in ``P:{acct}:holder`` (no expiry). A lease that
lapsed while Redis could not be reached (a stall, a restart) is therefore still ours when
it comes back if nobody acquired the account since: the holder is still our token, or
absent because Redis lost its data. Renewal takes such a lease back instead of giving up
the account, and the write scripts accept it the same way (:mod:`app.store`), so the
owner's in-memory state and pending writes survive the outage. Only a lease another
instance acquired means stepping down.

``P:dataset`` holds a random id set once per data set: when it changes (or the Redis
``run_id`` does), Redis came back empty, older or different, and owners rewrite the full
state of their accounts (:class:`app.supervisor.Supervisor`).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from app.store import Keys
from app.store.scripts import PipelinedScript, missing_script

_ACQUIRE_LUA = """
-- KEYS: lease, holder; ARGV: token, lease ms
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

_ACQUIRE_MANY_LUA = """
-- KEYS: lease, holder of each account in turn; ARGV: lease ms, then each account's new
-- token. Per account: 1 acquired, 0 someone holds it
local out = {}
for i = 1, #ARGV - 1 do
  if redis.call('SET', KEYS[2 * i - 1], ARGV[i + 1], 'NX', 'PX', ARGV[1]) then
    redis.call('SET', KEYS[2 * i], ARGV[i + 1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

_RENEW_LUA = """
-- KEYS: lease, holder of each account in turn; ARGV: lease ms, then each account's token.
-- Per account: 1 renewed, 2 taken back after a lapse, 0 lost (another instance acquired it)
local out = {}
for i = 1, #ARGV - 1 do
  local lease, holder, token = KEYS[2 * i - 1], KEYS[2 * i], ARGV[i + 1]
  local current = redis.call('GET', lease)
  if current == token then
    redis.call('PEXPIRE', lease, ARGV[1])
    out[i] = 1
  elseif current then
    out[i] = 0
  else
    local held = redis.call('GET', holder)
    if held and held ~= token then
      out[i] = 0
    else
      redis.call('SET', lease, token, 'PX', ARGV[1])
      redis.call('SET', holder, token)
      out[i] = 2
    end
  end
end
return out
"""

RENEW_BATCH = 500
"""Leases renewed per script call: one call per few hundred accounts, not one each (the
client's per-command cost dominated an idle service with thousands of accounts), short
enough that Redis is never blocked for long."""

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseManager:
    """Acquire, renew and release account leases for one instance."""

    def __init__(self, client: aioredis.Redis, keys: Keys, instance_id: str, lease_ms: int) -> None:
        self._client = client
        self._keys = keys
        self.instance_id = instance_id
        self.lease_ms = lease_ms
        self.tokens: dict[str, str] = {}
        self.renewed_at: dict[str, float] = {}
        self._acquire = client.register_script(_ACQUIRE_LUA)
        # pipelined by SHA1 alone: one round trip per tick (app/store/scripts.py)
        self._acquire_many = PipelinedScript(client, _ACQUIRE_MANY_LUA)
        self._renew = PipelinedScript(client, _RENEW_LUA)
        self._pipelined_loaded = False
        self._release = client.register_script(_RELEASE_LUA)
        self.dataset = ""  # the P:dataset id seen by the last heartbeat

    def token(self, account: str) -> str:
        return self.tokens.get(account, "")

    def owned(self) -> set[str]:
        return set(self.tokens)

    async def heartbeat(self) -> int:
        """Announce this instance; return how many instances are alive.

        Also reads the data set id into :attr:`dataset` (creating it when absent).
        """
        now = int(time.time() * 1000)
        pipe = self._client.pipeline(transaction=False)
        pipe.zadd(self._keys.instances, {self.instance_id: now})
        # an instance silent for a lease's life is gone: its leases are expiring too
        pipe.zremrangebyscore(self._keys.instances, 0, now - self.lease_ms)
        pipe.zcard(self._keys.instances)
        pipe.set(self._keys.dataset, secrets.token_hex(8), nx=True)
        pipe.get(self._keys.dataset)
        replies = await pipe.execute()
        value = replies[4]
        self.dataset = value.decode() if isinstance(value, bytes) else str(value or "")
        return max(int(replies[2]), 1)

    async def run_id(self) -> str:
        """The Redis server's run id: it changes when Redis restarts or fails over."""
        info: dict[str, object] = await self._client.info("server")
        return str(info.get("run_id", ""))

    async def leave(self) -> None:
        await self._client.zrem(self._keys.instances, self.instance_id)

    def fair_share(self, accounts: int, instances: int) -> int:
        return math.ceil(accounts / max(instances, 1))

    async def try_acquire(self, account: str) -> bool:
        token = f"{self.instance_id}:{secrets.token_hex(8)}"
        k = self._keys
        ok = await self._acquire(
            keys=[k.lease(account), k.holder(account)], args=[token, self.lease_ms]
        )
        if int(ok) == 1:
            self.tokens[account] = token
            self.renewed_at[account] = time.monotonic()
        return bool(ok)

    async def acquire_many(self, accounts: list[str]) -> list[str]:
        """Try to acquire each of ``accounts`` (a few round trips for any number); return
        those acquired, in the order given."""
        if not accounts:
            return []
        tokens = {a: f"{self.instance_id}:{secrets.token_hex(8)}" for a in accounts}
        replies = await self._per_account(self._acquire_many, accounts, tokens)
        now = time.monotonic()
        acquired = []
        for account, reply in zip(accounts, replies, strict=True):
            if int(reply) == 1:
                self.tokens[account] = tokens[account]
                self.renewed_at[account] = now
                acquired.append(account)
        return acquired

    async def renew_all(self) -> tuple[set[str], set[str]]:
        """Renew every held lease in one round trip.

        Returns ``(lost, retaken)``: the accounts another instance acquired (forgotten
        here), and those whose lease had lapsed with nobody taking it since (held again).
        """
        if not self.tokens:
            return set(), set()
        accounts = list(self.tokens)
        replies = await self._per_account(self._renew, accounts, self.tokens)
        lost: set[str] = set()
        retaken: set[str] = set()
        now = time.monotonic()
        for account, reply in zip(accounts, replies, strict=True):
            if int(reply) in (1, 2):
                self.renewed_at[account] = now
                if int(reply) == 2:
                    retaken.add(account)
            else:
                lost.add(account)
                self.forget(account)
        return lost, retaken

    async def _per_account(
        self, script: PipelinedScript, accounts: list[str], tokens: Mapping[str, str]
    ) -> list[Any]:
        """One reply per account of ``script`` (acquire or renew), called with each
        account's lease and holder keys and token, :data:`RENEW_BATCH` accounts per call,
        every call in one pipeline: one round trip for any number of accounts."""
        k = self._keys
        await self._load_pipelined()
        pipe = self._client.pipeline(transaction=False)
        for start in range(0, len(accounts), RENEW_BATCH):
            batch = accounts[start : start + RENEW_BATCH]
            script.queue(
                pipe,
                [key for a in batch for key in (k.lease(a), k.holder(a))],
                [self.lease_ms, *(tokens[a] for a in batch)],
            )
        return [code for batch in await self._execute(pipe) for code in batch]

    async def _load_pipelined(self) -> None:
        """Load the pipelined scripts before their first use and after Redis lost them."""
        if not self._pipelined_loaded:
            await self._acquire_many.load()
            await self._renew.load()
            self._pipelined_loaded = True

    async def _execute(self, pipe: Pipeline) -> list[Any]:
        """Run ``pipe``; a script Redis no longer holds fails this tick and is loaded
        again before the next (the supervisor retries on its next tick)."""
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        if missing_script(replies):
            self._pipelined_loaded = False
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def expired_locally(self) -> set[str]:
        """Leases not renewed for longer than their life (Redis did not answer)."""
        limit = time.monotonic() - self.lease_ms / 1000 * 0.9
        return {a for a, t in self.renewed_at.items() if t < limit}

    def forget(self, account: str) -> None:
        self.tokens.pop(account, None)
        self.renewed_at.pop(account, None)

    async def release(self, account: str) -> None:
        token = self.tokens.get(account)
        self.forget(account)
        if token is not None:
            await self._release(keys=[self._keys.lease(account)], args=[token])

    async def owners(self, accounts: list[str]) -> dict[str, str]:
        """account -> owning instance id, for the accounts that have an owner (one MGET)."""
        if not accounts:
            return {}
        values = await self._client.mget([self._keys.lease(a) for a in accounts])
        out: dict[str, str] = {}
        for account, value in zip(accounts, values, strict=True):
            if value is not None:
                text = value.decode() if isinstance(value, bytes) else str(value)
                out[account] = text.rsplit(":", 1)[0]
        return out


class Fence:
    """The lease token every write for an account must still match (the writer's fence).

    ``None`` for an enabled account this instance does not hold (released, lost or never
    acquired): the writer refuses such writes rather than send them unfenced. A disabled
    account's status is written by every instance without a lease ('').
    """

    def __init__(self, leases: LeaseManager, disabled: Iterable[str]) -> None:
        self._leases = leases
        self._disabled = frozenset(disabled)

    def __call__(self, account: str) -> str | None:
        token = self._leases.token(account)
        if token:
            return token
        return "" if account in self._disabled else None
