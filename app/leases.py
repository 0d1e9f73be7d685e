"""Account leases: exactly one instance owns an account's upstream socket at a time.

A lease is ``P:{acct}:lease = <random token>`` set with ``SET NX PX`` and renewed well
before it expires. The token doubles as the fencing token: every state write checks it
inside its Lua script, so a paused or partitioned former owner can never overwrite the
new owner's state. Instances announce themselves in ``P:instances`` (a sorted set of
heartbeats) so each can take only its fair share of the accounts.
"""

from __future__ import annotations

import math
import secrets
import time

import redis.asyncio as aioredis

from app.store import Keys

_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

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
        self._renew = client.register_script(_RENEW_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    def token(self, account: str) -> str:
        return self.tokens.get(account, "")

    def owned(self) -> set[str]:
        return set(self.tokens)

    async def heartbeat(self) -> int:
        """Announce this instance; return how many instances are alive."""
        now = int(time.time() * 1000)
        pipe = self._client.pipeline(transaction=False)
        pipe.zadd(self._keys.instances, {self.instance_id: now})
        # an instance silent for a lease's life is gone: its leases are expiring too
        pipe.zremrangebyscore(self._keys.instances, 0, now - self.lease_ms)
        pipe.zcard(self._keys.instances)
        replies = await pipe.execute()
        return max(int(replies[2]), 1)

    async def leave(self) -> None:
        await self._client.zrem(self._keys.instances, self.instance_id)

    def fair_share(self, accounts: int, instances: int) -> int:
        return math.ceil(accounts / max(instances, 1))

    async def try_acquire(self, account: str) -> bool:
        token = f"{self.instance_id}:{secrets.token_hex(8)}"
        ok = await self._client.set(
            self._keys.account(account, "lease"), token, nx=True, px=self.lease_ms
        )
        if ok:
            self.tokens[account] = token
            self.renewed_at[account] = time.monotonic()
        return bool(ok)

    async def renew_all(self) -> set[str]:
        """Renew every held lease in one round trip; return the accounts that were lost."""
        if not self.tokens:
            return set()
        accounts = list(self.tokens)
        pipe = self._client.pipeline(transaction=False)
        for account in accounts:
            await self._renew(
                keys=[self._keys.account(account, "lease")],
                args=[self.tokens[account], self.lease_ms],
                client=pipe,
            )
        replies = await pipe.execute()
        lost: set[str] = set()
        now = time.monotonic()
        for account, reply in zip(accounts, replies, strict=True):
            if int(reply) == 1:
                self.renewed_at[account] = now
            else:
                lost.add(account)
                self.forget(account)
        return lost

    def expired_locally(self) -> set[str]:
        """Leases not renewed for longer than their life: assume them gone (Redis down)."""
        limit = time.monotonic() - self.lease_ms / 1000 * 0.9
        return {a for a, t in self.renewed_at.items() if t < limit}

    def forget(self, account: str) -> None:
        self.tokens.pop(account, None)
        self.renewed_at.pop(account, None)

    async def release(self, account: str) -> None:
        token = self.tokens.get(account)
        self.forget(account)
        if token is not None:
            await self._release(keys=[self._keys.account(account, "lease")], args=[token])

    async def owners(self, accounts: list[str]) -> dict[str, str]:
        """account -> owning instance id, for the accounts that have an owner (one MGET)."""
        if not accounts:
            return {}
        values = await self._client.mget([self._keys.account(a, "lease") for a in accounts])
        out: dict[str, str] = {}
        for account, value in zip(accounts, values, strict=True):
            if value is not None:
                text = value.decode() if isinstance(value, bytes) else str(value)
                out[account] = text.rsplit(":", 1)[0]
        return out
