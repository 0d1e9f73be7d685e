"""The fold: merge rules chosen by the event, no-op updates dropped, REST watermark."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import redis.asyncio as aioredis

from app.domain import (
    AssetBalance,
    BalanceSnapshot,
    BalanceUpdate,
    LoneBalance,
    MarketPrice,
    PriceUpdate,
)
from app.fold import AccountFold
from app.prices.model import Price, PriceSource
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


async def test_prices_events_and_status_reach_the_writer_through_the_fold(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    writer = BalanceWriter(redis_client, keys)
    writer.start()
    recorded: list[object] = []
    fold = AccountFold("acct", "solanatracker", writer, market=recorded.append)
    mint = "6p6xgHyF7AeE6TZkSmFsko444wqoP15icUSqi2jfGiPN"
    fold.apply_price(PriceUpdate(mint, Decimal("6.5"), "TRUMP", "OFFICIAL TRUMP", 6))
    fold.apply_price(PriceUpdate(mint, Decimal("7.25"), None, None, None))  # lacks metadata
    fold.report_status({"account": "acct", "state": "live"})
    await writer.drain(5)
    stored = orjson.loads(await redis_client.hget(keys.prices, mint) or b"null")
    # a field the second update lacks never nulls a stored one
    assert stored == {
        "price_usd": "7.25",
        "symbol": "TRUMP",
        "name": "OFFICIAL TRUMP",
        "decimals": 6,
    }
    snap = await BalanceReader(redis_client, keys).snapshot(["acct"])
    assert snap.statuses["acct"]["state"] == "live"
    price = Price(PriceSource.SFOX, "btcusd", "BTC", "USD", Decimal(1), 0.0)
    fold.apply_market_price(MarketPrice(price))
    assert recorded == [price]
    await writer.close()


async def test_a_batch_hands_the_newest_value_per_asset_to_the_writer_once(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """Under load (the writer keeps no superseded values) a batch conflates per asset."""
    writer = BalanceWriter(redis_client, Keys(key_prefix), keep_per_second=0)
    writer.start()
    fold = AccountFold("acct", "bitopro", writer)
    submitted: list[tuple[str, ...]] = []
    submit = writer.submit_update

    def spy(account: str, venue: str, balances: Any, venue_ts: str | None = None) -> None:
        balances = list(balances)
        submitted.append(tuple(f"{x.asset}={x.total}@{venue_ts}" for x in balances))
        submit(account, venue, balances, venue_ts)

    writer.submit_update = spy  # type: ignore[method-assign]
    version = fold.held_version
    with fold.batch():
        for n in range(1, 4):
            fold.apply_update(BalanceUpdate((b("BTC", str(n)),), f"t{n}"))
        lone: LoneBalance = ("", "ETH", Decimal(5), Decimal(5), Decimal(0), {}, "t9")
        assert fold.apply_lone(lone)
        assert not fold.apply_lone(lone)  # unchanged: nothing
        assert submitted == []  # nothing leaves before the batch ends
        assert fold.state[("", "BTC")].total == 3  # but the state moved at once
    assert submitted == [("BTC=3@t3",), ("ETH=5@t9",)]
    assert fold.held_version > version  # two assets became held
    await writer.drain(5)
    assert await state_of(redis_client, key_prefix) == {
        ("", "BTC"): Decimal(3),
        ("", "ETH"): Decimal(5),
    }
    await writer.close()


async def test_a_snapshot_inside_a_batch_keeps_its_place(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    writer = BalanceWriter(redis_client, Keys(key_prefix))
    writer.start()
    fold = AccountFold("acct", "bitopro", writer)
    with fold.batch():
        fold.apply_update(BalanceUpdate((b("OLD", "1"),)))
        fold.apply_snapshot(BalanceSnapshot("", (b("BTC", "1"),)))  # OLD is gone
        fold.apply_update(BalanceUpdate((b("BTC", "2"),)))
    await writer.drain(5)
    assert await state_of(redis_client, key_prefix) == {("", "BTC"): Decimal(2)}
    await writer.close()


async def test_a_batch_passes_on_every_value_while_the_writer_keeps_them(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """Frames read together each reach the change stream in order, not just the last."""
    keys = Keys(key_prefix)
    writer = BalanceWriter(redis_client, keys)
    fold = AccountFold("acct", "bitopro", writer)
    with fold.batch():
        for n in range(1, 4):
            fold.apply_update(BalanceUpdate((b("BTC", str(n)),), f"t{n}"))
        for n in range(4, 6):
            lone: LoneBalance = ("", "BTC", Decimal(n), Decimal(n), Decimal(0), {}, f"t{n}")
            assert fold.apply_lone(lone)
    await writer.flush_once()
    changes = await BalanceReader(redis_client, keys).changes_since(0)
    docs = [orjson.loads(c.message) for c in changes]
    assert [(d["balance"]["total"], d["balance"]["venue_ts"]) for d in docs] == [
        (str(n), f"t{n}") for n in range(1, 6)
    ]
    assert [d["seq"] for d in docs] == [1, 2, 3, 4, 5]
    assert await state_of(redis_client, key_prefix) == {("", "BTC"): Decimal(5)}
