"""Account leases against a real Redis: fair share, expiry, renewal and take-over."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from app.leases import LeaseManager
from app.store import Keys

LEASE_MS = 300


def manager(client: aioredis.Redis, prefix: str, instance: str) -> LeaseManager:
    return LeaseManager(client, Keys(prefix), instance, LEASE_MS)


async def text(client: aioredis.Redis, key: str) -> str:
    value = await client.get(key)
    assert isinstance(value, bytes), key
    return value.decode()


async def wait_until_gone(client: aioredis.Redis, key: str, timeout: float = 5.0) -> None:
    """Poll until Redis expired ``key`` (never a fixed sleep: expiry timing varies)."""
    deadline = time.monotonic() + timeout
    while await client.exists(key):
        if time.monotonic() > deadline:
            raise AssertionError(f"{key} did not expire within {timeout}s")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("accounts", "instances", "share"),
    [(10, 1, 10), (10, 3, 4), (9, 3, 3), (1, 4, 1), (0, 2, 0), (5, 0, 5)],
)
async def test_fair_share_rounds_up_so_every_account_has_room(
    redis_client: aioredis.Redis, accounts: int, instances: int, share: int
) -> None:
    lm = manager(redis_client, "unused", "a")
    assert lm.fair_share(accounts, instances) == share
    assert lm.fair_share(accounts, instances) * max(instances, 1) >= accounts


async def test_heartbeats_count_live_instances_and_forget_silent_ones(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    a = manager(redis_client, key_prefix, "a")
    b = manager(redis_client, key_prefix, "b")
    assert await a.heartbeat() == 1
    assert await b.heartbeat() == 2
    assert a.dataset and a.dataset == await text(redis_client, Keys(key_prefix).dataset)
    # an instance silent for a lease's life is dropped by the next heartbeat
    stale_ms = int(time.time() * 1000) - 10 * LEASE_MS
    await redis_client.zadd(Keys(key_prefix).instances, {"b": stale_ms})
    assert await a.heartbeat() == 1
    await a.leave()
    assert await redis_client.zcard(Keys(key_prefix).instances) == 0


async def test_one_owner_at_a_time(redis_client: aioredis.Redis, key_prefix: str) -> None:
    a = manager(redis_client, key_prefix, "a")
    b = manager(redis_client, key_prefix, "b")
    assert await a.try_acquire("acct")
    assert not await b.try_acquire("acct")
    assert await b.owners(["acct", "other"]) == {"acct": "a"}
    assert a.owned() == {"acct"} and b.owned() == set()
    keys = Keys(key_prefix)
    assert await text(redis_client, keys.holder("acct")) == a.token("acct")


async def test_renewal_keeps_the_lease_alive(redis_client: aioredis.Redis, key_prefix: str) -> None:
    a = LeaseManager(redis_client, Keys(key_prefix), "a", 1_000)  # room for a slow machine
    assert await a.try_acquire("acct")
    for _ in range(4):  # past one lease life in total
        await asyncio.sleep(0.3)
        assert await a.renew_all() == (set(), set())
    assert await redis_client.pttl(Keys(key_prefix).lease("acct")) > 0


async def test_an_expired_lease_is_taken_over(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    a = manager(redis_client, key_prefix, "a")
    b = manager(redis_client, key_prefix, "b")
    assert await a.try_acquire("acct")
    await wait_until_gone(redis_client, Keys(key_prefix).lease("acct"))
    assert await b.try_acquire("acct")
    # the former owner learns on its next renewal that the account is gone
    lost, retaken = await a.renew_all()
    assert (lost, retaken) == ({"acct"}, set())
    assert a.owned() == set() and b.owned() == {"acct"}
    assert await a.owners(["acct"]) == {"acct": "b"}


async def test_a_lapsed_lease_nobody_took_is_taken_back(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    a = manager(redis_client, key_prefix, "a")
    assert await a.try_acquire("acct")
    token = a.token("acct")
    await wait_until_gone(redis_client, Keys(key_prefix).lease("acct"))
    assert await a.renew_all() == (set(), {"acct"})
    assert a.token("acct") == token
    assert await text(redis_client, Keys(key_prefix).lease("acct")) == token


async def test_a_lease_is_held_back_after_redis_lost_it(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """Lease and holder both gone (the data set was lost): the owner takes it back."""
    a = manager(redis_client, key_prefix, "a")
    assert await a.try_acquire("acct")
    keys = Keys(key_prefix)
    await redis_client.delete(keys.lease("acct"), keys.holder("acct"))
    assert await a.renew_all() == (set(), {"acct"})
    assert await text(redis_client, keys.holder("acct")) == a.token("acct")


async def test_release_frees_only_our_own_lease(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    a = manager(redis_client, key_prefix, "a")
    b = manager(redis_client, key_prefix, "b")
    assert await a.try_acquire("acct")
    await a.release("acct")
    assert a.owned() == set()
    assert await b.try_acquire("acct")
    # a stale release (a's token is gone) must not free b's lease
    a.tokens["acct"] = "a:old-token"
    await a.release("acct")
    assert await b.owners(["acct"]) == {"acct": "b"}


async def test_locally_expired_leases_are_reported(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    a = manager(redis_client, key_prefix, "a")
    assert await a.try_acquire("acct")
    assert a.expired_locally() == set()
    a.renewed_at["acct"] = time.monotonic() - LEASE_MS / 1000
    assert a.expired_locally() == {"acct"}


async def test_renewal_goes_on_after_redis_forgot_the_scripts(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """Renewals pipeline their script by SHA1 alone; a Redis that lost it (restart,
    flushed cache) fails one tick and the next one loads it again."""
    leases = manager(redis_client, key_prefix, "i1")
    assert await leases.acquire_many(["a", "b"]) == ["a", "b"]
    assert await leases.renew_all() == (set(), set())
    await redis_client.script_flush()
    with pytest.raises(NoScriptError):
        await leases.renew_all()
    assert await leases.renew_all() == (set(), set())
    assert leases.owned() == {"a", "b"}
    await redis_client.script_flush()
    with pytest.raises(NoScriptError):
        await leases.acquire_many(["c"])
    assert await leases.acquire_many(["c"]) == ["c"]
