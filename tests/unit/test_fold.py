"""The fold: merge rules chosen by the event, no-op updates dropped, REST watermark."""

from __future__ import annotations

from decimal import Decimal

import redis.asyncio as aioredis

from app.domain import AssetBalance, BalanceSnapshot, BalanceUpdate, PriceUpdate
from app.fold import AccountFold
from app.store import BalanceReader, BalanceWriter, Keys


def b(asset: str, total: str, wallet: str = "", symbol: str | None = None) -> AssetBalance:
    amount = Decimal(total)
    return AssetBalance(wallet, asset, amount, amount, Decimal(0), symbol or asset, {})


async def state_of(client: aioredis.Redis, prefix: str) -> dict[tuple[str, str], Decimal]:
    snap = await BalanceReader(client, Keys(prefix)).snapshot(["acct"])
    return {(r.wallet, r.asset): r.total for r in snap.records}


async def test_snapshot_replaces_and_updates_merge(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    writer = BalanceWriter(redis_client, Keys(key_prefix))
    writer.start()
    fold = AccountFold("acct", "bitopro", writer)
    reader = BalanceReader(redis_client, Keys(key_prefix))
    fold.apply_snapshot(BalanceSnapshot("", (b("BTC", "1"), b("ETH", "2"))))
    await writer.drain(5)
    assert await reader.current_seq() == 2
    assert fold.apply_update(BalanceUpdate((b("BTC", "1"),))) == 0  # no change, no write
    assert fold.apply_update(BalanceUpdate((b("ETH", "3"),))) == 1
    await writer.drain(5)
    assert await reader.current_seq() == 3
    fold.apply_snapshot(BalanceSnapshot("", (b("ETH", "3"),)))  # BTC is gone
    await writer.drain(5)
    assert await state_of(redis_client, key_prefix) == {("", "ETH"): Decimal(3)}
    assert await reader.current_seq() == 4
    await writer.close()


async def test_rest_answer_never_overwrites_newer_stream_update(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    writer = BalanceWriter(redis_client, Keys(key_prefix))
    writer.start()
    fold = AccountFold("acct", "sfox", writer)
    fold.apply_update(BalanceUpdate((b("BTC", "1"), b("OLD", "5"))))
    ticket = fold.begin_seed()  # the REST request is sent now...
    fold.apply_update(BalanceUpdate((b("BTC", "2"), b("NEW", "7"))))  # ...the stream moves on
    # ...and the REST answer, taken before those updates, arrives last
    fold.finish_seed(ticket, BalanceSnapshot("", (b("BTC", "1"), b("USD", "100"))))
    await writer.drain(5)
    assert await state_of(redis_client, key_prefix) == {
        ("", "BTC"): Decimal(2),  # the stream's newer value survives
        ("", "NEW"): Decimal(7),  # a stream-created asset is not removed by the older REST
        ("", "USD"): Decimal(100),  # REST seeds what the stream never mentioned
    }  # OLD is gone: the REST snapshot says so and the stream did not touch it since
    await writer.close()


async def test_seed_replaces_only_its_wallet_scope(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    writer = BalanceWriter(redis_client, Keys(key_prefix))
    writer.start()
    fold = AccountFold("acct", "sfox", writer)
    fold.apply_update(BalanceUpdate((b("USDC", "5", wallet="web3:Ethereum:0xabc"),)))
    ticket = fold.begin_seed()
    fold.finish_seed(ticket, BalanceSnapshot("", (b("USD", "1"),)))
    await writer.drain(5)
    assert await state_of(redis_client, key_prefix) == {
        ("web3:Ethereum:0xabc", "USDC"): Decimal(5),
        ("", "USD"): Decimal(1),
    }
    await writer.close()


async def test_learned_symbol_relabels_held_mint(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    writer = BalanceWriter(redis_client, Keys(key_prefix))
    writer.start()
    fold = AccountFold("acct", "solanatracker", writer)
    mint = "6p6xgHyF7AeE6TZkSmFsko444wqoP15icUSqi2jfGiPN"
    wallet = "FV1r15rbNKkJanXLheoJA7fXEq6NDuMJ3bukXuhJWyV1"
    fold.apply_update(
        BalanceUpdate((AssetBalance(wallet, mint, Decimal(90), Decimal(90), Decimal(0), None, {}),))
    )
    assert fold.held_mints() == {mint}
    fold.apply_price(PriceUpdate(mint, Decimal("6.002467911111111"), "TRUMP", "OFFICIAL TRUMP", 6))
    await writer.drain(5)
    snap = await BalanceReader(redis_client, Keys(key_prefix)).snapshot(["acct"])
    assert [r.symbol for r in snap.records] == ["TRUMP"]
    await writer.close()
