"""The balance store against a real Redis: exactness, atomicity, seq and the change stream."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from app.domain import AssetBalance, adds_up
from app.prices.graph import PriceGraph
from app.prices.report import totals_doc
from app.redis_server import EmbeddedRedis
from app.store import (
    BalanceReader,
    BalanceWriter,
    FlushResult,
    Keys,
    ResyncRequired,
    decimal_str,
    field_name,
)
from tests.polling import eventually


def bal(asset: str, total: str, available: str | None = None, wallet: str = "") -> AssetBalance:
    avail = Decimal(available if available is not None else total)
    return AssetBalance.from_total_available(wallet, asset, Decimal(total), avail, symbol=asset)


async def make(client: aioredis.Redis, prefix: str) -> tuple[BalanceWriter, BalanceReader]:
    keys = Keys(prefix)
    writer = BalanceWriter(client, keys)
    writer.start()
    return writer, BalanceReader(client, keys)


async def messages(reader: BalanceReader, since: int = 0) -> list[dict[str, object]]:
    return [orjson.loads(c.message) for c in await reader.changes_since(since)]


async def test_exact_round_trip_of_large_amount(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    writer, reader = await make(redis_client, key_prefix)
    writer.submit_snapshot(
        "acct", "bitopro", "", [bal("ADA", "999999999999.99999999", "0.00000001")]
    )
    await writer.drain(5)
    snap = await reader.snapshot(["acct"])
    (record,) = snap.records
    assert record.total == Decimal("999999999999.99999999")
    assert record.available == Decimal("0.00000001")
    assert record.locked == Decimal("999999999999.99999998")
    assert adds_up(record.total, record.available, record.locked)
    raw = await redis_client.hget(Keys(key_prefix).balances("acct"), field_name("", "ADA"))
    assert isinstance(raw, bytes) and b'"total":"999999999999.99999999"' in raw
    (msg,) = await messages(reader)
    assert msg["type"] == "balance"
    assert msg["balance"]["total"] == "999999999999.99999999"  # type: ignore[index]
    await writer.close()


async def test_same_snapshot_twice_emits_nothing(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    writer, reader = await make(redis_client, key_prefix)
    snapshot = [bal("BTC", "1.5", "1"), bal("ETH", "2")]
    writer.submit_snapshot("a", "bitopro", "", snapshot)
    await writer.drain(5)
    seq = await reader.current_seq()
    assert seq == 2
    writer.submit_snapshot("a", "bitopro", "", snapshot)
    writer.submit_update("a", "bitopro", [bal("BTC", "1.50", "1.0")])  # same value, other text
    await writer.drain(5)
    assert await reader.current_seq() == seq
    await writer.close()


async def test_snapshot_removes_missing_assets(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    writer, reader = await make(redis_client, key_prefix)
    writer.submit_snapshot("a", "bitopro", "", [bal("BTC", "1"), bal("ETH", "2"), bal("DOGE", "3")])
    writer.submit_update("a", "sfox", [bal("USDC", "5", wallet="web3:Ethereum:0xabc")])
    await writer.drain(5)
    writer.submit_snapshot("a", "bitopro", "", [bal("BTC", "1")])
    await writer.drain(5)
    msgs = await messages(reader, 4)
    removed = sorted((m["wallet"], m["asset"]) for m in msgs if m["type"] == "removed")
    assert removed == [("", "DOGE"), ("", "ETH")]
    assert all(m["account"] == "a" for m in msgs)
    snap = await reader.snapshot(["a"])
    # the other wallet scope is untouched by a replace of wallet ""
    assert sorted((r.wallet, r.asset) for r in snap.records) == [
        ("", "BTC"),
        ("web3:Ethereum:0xabc", "USDC"),
    ]
    await writer.close()


async def test_replace_is_atomic_for_concurrent_readers(redis_url: str, key_prefix: str) -> None:
    wclient = aioredis.Redis.from_url(redis_url)
    rclient = aioredis.Redis.from_url(redis_url)
    writer, _ = await make(wclient, key_prefix)
    reader = BalanceReader(rclient, Keys(key_prefix))
    assets = [f"A{i:03d}" for i in range(500)]
    writer.submit_snapshot("big", "bitopro", "", [bal(a, "0") for a in assets])
    await writer.drain(5)
    done = asyncio.Event()
    seen_versions: set[str] = set()
    reads = 0

    async def read_loop() -> None:
        nonlocal reads
        while not done.is_set():
            snap = await reader.snapshot(["big"])
            versions = {str(r.total) for r in snap.records}
            assert len(snap.records) in (500, 250), len(snap.records)
            assert len(versions) == 1, f"mixed snapshot: {sorted(versions)[:5]}"
            seen_versions.update(versions)
            reads += 1

    readers = [asyncio.create_task(read_loop()) for _ in range(3)]
    for version in range(1, 31):
        # odd versions have all 500 assets, even ones only half: removals are atomic too
        subset = assets if version % 2 else assets[:250]
        writer.submit_snapshot("big", "bitopro", "", [bal(a, str(version)) for a in subset])
        await writer.drain(5)
        # two reads more: at least one began after this version went in
        wanted = reads + 2
        await eventually(lambda: reads >= wanted, f"reads after version {version}")  # noqa: B023
    done.set()
    await asyncio.gather(*readers)
    assert reads > 30
    assert len(seen_versions) > 3
    await writer.close()
    await wclient.aclose()
    await rclient.aclose()


async def test_seq_strictly_increases_across_concurrent_writers(
    redis_url: str, key_prefix: str
) -> None:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(3)]
    writers = [BalanceWriter(c, Keys(key_prefix)) for c in clients]
    for w in writers:
        w.start()

    async def pump(i: int, w: BalanceWriter) -> None:
        for n in range(200):
            w.submit_update(f"acct{i}", "sfox", [bal(f"C{n % 7}", str(n + 1))])
            if n % 10 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(pump(i, w) for i, w in enumerate(writers)))
    for w in writers:
        await w.drain(10)
    reader = BalanceReader(clients[0], Keys(key_prefix))
    changes = await reader.changes_since(0)
    seqs = [c.seq for c in changes]
    assert seqs == list(range(1, len(seqs) + 1))
    assert seqs[-1] == await reader.current_seq()
    for doc in (orjson.loads(c.message) for c in changes):
        assert isinstance(doc["seq"], int)
    # the final state is the last value each writer submitted per asset
    snap = await reader.snapshot(["acct0", "acct1", "acct2"])
    final = {(r.account, r.asset): r.total for r in snap.records}
    for i in range(3):
        for c in range(7):
            last = max(n for n in range(200) if n % 7 == c) + 1
            assert final[(f"acct{i}", f"C{c}")] == Decimal(last)
    for w in writers:
        await w.close()
    for client in clients:
        await client.aclose()


async def test_changes_since_returns_exactly_the_missed_changes(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    writer, reader = await make(redis_client, key_prefix)
    for n in range(20):
        writer.submit_update("a", "sfox", [bal("BTC", str(n + 1))])
        await writer.drain(5)
    missed = await reader.changes_since(12)
    assert [c.seq for c in missed] == list(range(13, 21))
    totals = [orjson.loads(c.message)["balance"]["total"] for c in missed]
    assert totals == [str(n) for n in range(13, 21)]
    assert await reader.changes_since(20) == []
    await writer.close()


async def test_changes_since_detects_trimmed_history(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    writer = BalanceWriter(redis_client, keys, stream_maxlen=100)
    writer.start()
    for n in range(400):
        writer.submit_update("a", "sfox", [bal(f"X{n}", "1")])
        await writer.drain(5)
    reader = BalanceReader(redis_client, keys)
    with pytest.raises(ResyncRequired):
        await reader.changes_since(1)
    assert len(await reader.changes_since(390)) == 10
    await writer.close()


async def test_totals_are_exact_sums(redis_client: aioredis.Redis, key_prefix: str) -> None:
    writer, reader = await make(redis_client, key_prefix)
    writer.submit_snapshot("a", "bitopro", "", [bal("BTC", "0.1", "0.05"), bal("ETH", "1")])
    writer.submit_snapshot("b", "sfox", "", [bal("BTC", "0.2", "0.2")])
    writer.submit_update("b", "sfox", [bal("BTC", "0.00000001", wallet="web3:Bitcoin:bc1q")])
    await writer.drain(5)
    snap = await reader.snapshot(["a", "b"])
    # the totals the API serves, summed from what the store read back
    doc = totals_doc(PriceGraph().view(), snap.records, "usd", snap.seq)
    totals = {row["symbol"]: row for row in doc["totals"]}
    assert totals["BTC"]["total"] == "0.30000001"  # a float sum would be 0.30000001000000004
    assert totals["BTC"]["available"] == "0.25000001"
    assert totals["BTC"]["locked"] == "0.05"
    assert totals["BTC"]["accounts"] == 2
    assert totals["ETH"]["total"] == "1"
    await writer.close()


async def test_writes_arriving_together_share_one_round_trip(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    flushes: list[int] = []

    def on_flush(results: object) -> None:
        flushes.append(1)

    writer = BalanceWriter(redis_client, Keys(key_prefix), on_flush=on_flush)
    writer.start()
    for n in range(5_000):
        writer.submit_update(f"acct{n % 50}", "bitopro", [bal(f"C{n}", "1")])
    await writer.drain(10)
    assert len(flushes) == 1
    assert await BalanceReader(redis_client, Keys(key_prefix)).current_seq() == 5_000
    await writer.close()


async def test_a_flush_returns_each_change_as_the_stream_holds_it(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """The writer's own changes, handed to its hub, equal what XREAD would deliver."""
    keys = Keys(key_prefix)
    writer = BalanceWriter(redis_client, keys)
    reader = BalanceReader(redis_client, keys)
    writer.touch("a", "bitopro", 1795255200.123456)
    writer.submit_snapshot("a", "bitopro", "", [bal("BTC", "1.5"), bal("ETH", "2")])
    writer.submit_status("a", {"account": "a", "venue": "bitopro", "state": "live"})
    first = await writer.flush_once()
    writer.submit_snapshot("a", "bitopro", "", [bal("BTC", "1.5")])  # ETH removed
    second = await writer.flush_once()
    written = [c for r in (*first, *second) for c in r.written]
    assert [c.seq for c in written] == [1, 2, 3, 4]
    stored = await reader.changes_since(0)
    assert written == stored
    assert [r.last_seq for r in first] == [2, 3]
    assert orjson.loads(written[3].message)["type"] == "removed"


async def test_every_value_of_a_key_changed_before_a_flush_is_written_in_order(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """A key that changes faster than the writer flushes still shows each value."""
    keys = Keys(key_prefix)
    writer, reader = BalanceWriter(redis_client, keys), BalanceReader(redis_client, keys)
    for n in range(1, 5):
        writer.submit_update("a", "bitopro", [bal("BTC", str(n)), bal("ETH", "7")])
    results = await writer.flush_once()
    docs = await messages(reader)
    assert [(d["balance"]["asset"], d["balance"]["total"]) for d in docs] == [  # type: ignore[index]
        ("BTC", "1"),
        ("BTC", "2"),
        ("BTC", "3"),
        ("BTC", "4"),
        ("ETH", "7"),
    ]  # each key's values in arrival order; an unchanged ETH is not repeated
    assert [d["seq"] for d in docs] == [1, 2, 3, 4, 5]
    assert [c.seq for r in results for c in r.written] == [1, 2, 3, 4, 5]
    snap = await reader.snapshot(["a"])
    assert {r.asset: r.total for r in snap.records} == {"BTC": 4, "ETH": 7}


async def test_past_its_budgets_the_writer_keeps_only_the_newest_value(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    writer = BalanceWriter(redis_client, keys, keep_per_second=3, keep_per_key=2)
    reader = BalanceReader(redis_client, keys)
    for n in range(1, 6):
        writer.submit_update("a", "bitopro", [bal("BTC", str(n)), bal("ETH", str(n))])
    # three kept this second: BTC 1, ETH 1, BTC 2; the second's budget is spent for every key
    assert not writer.keeps("a", "", "SOL")
    await writer.flush_once()
    docs = await messages(reader)
    by_asset: dict[str, list[str]] = {}
    for d in docs:
        by_asset.setdefault(d["balance"]["asset"], []).append(d["balance"]["total"])  # type: ignore[index]
    assert by_asset == {"BTC": ["1", "2", "5"], "ETH": ["1", "5"]}
    await asyncio.sleep(1.05)  # the budgets are a second's
    await writer.flush_once()
    assert writer.keeps("a", "", "SOL") and writer.keeps("a", "", "BTC")


async def test_a_replace_drops_the_superseded_values_of_its_wallet(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """Kept values of assets a later snapshot no longer lists must not keep them alive."""
    keys = Keys(key_prefix)
    writer, reader = BalanceWriter(redis_client, keys), BalanceReader(redis_client, keys)
    writer.submit_snapshot("a", "bitopro", "", [bal("BTC", "1"), bal("ETH", "1")])
    await writer.flush_once()
    writer.submit_update("a", "bitopro", [bal("BTC", "2"), bal("SOL", "1", wallet="w")])
    writer.submit_update("a", "bitopro", [bal("BTC", "3"), bal("SOL", "2", wallet="w")])
    writer.submit_snapshot("a", "bitopro", "", [bal("ETH", "5")])  # BTC is gone
    await writer.flush_once()
    docs = await messages(reader, since=2)
    seen = [(d["type"], d.get("asset") or d["balance"]["asset"]) for d in docs]  # type: ignore[index]
    assert ("balance", "BTC") not in seen and ("removed", "BTC") in seen
    assert [d["balance"]["total"] for d in docs if d["type"] == "balance"  # type: ignore[index]
            and d["balance"]["asset"] == "SOL"] == ["1", "2"]  # type: ignore[index]  # fmt: skip
    snap = await reader.snapshot(["a"])
    assert {(r.wallet, r.asset): r.total for r in snap.records} == {
        ("", "ETH"): 5, ("w", "SOL"): 2,
    }  # fmt: skip


async def test_status_is_stored_and_broadcast_once(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    writer, reader = await make(redis_client, key_prefix)
    status = {"account": "a", "venue": "sfox", "state": "live", "reconnects": 0}
    writer.submit_status("a", status)
    await writer.drain(5)
    writer.submit_status("a", status)
    writer.touch("a", "sfox", 1795255200.0)  # 2026-11-21T10:00:00Z
    await writer.drain(5)
    msgs = await messages(reader)
    assert msgs == [{"seq": 1, "type": "status", "account": status}]
    snap = await reader.snapshot(["a"])
    assert snap.statuses["a"]["state"] == "live"
    assert snap.statuses["a"]["last_message_at"] == "2026-11-21T10:00:00.000Z"
    writer.submit_event("a", "order", {"id": "x", "qty": "1.5"})
    await writer.drain(5)
    (event,) = await messages(reader, 1)
    assert event == {
        "seq": 2,
        "type": "event",
        "account": "a",
        "kind": "order",
        "data": {"id": "x", "qty": "1.5"},
    }
    await writer.close()


async def test_stale_flag_follows_account_state(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    writer, reader = await make(redis_client, key_prefix)
    writer.submit_update("a", "sfox", [bal("BTC", "1")])
    writer.submit_status("a", {"state": "stale"})
    await writer.drain(5)
    (record,) = (await reader.snapshot(["a"])).records
    assert record.stale is True and record.total == 1  # stale is shown, never zeroed
    writer.submit_status("a", {"state": "live"})
    await writer.drain(5)
    (record,) = (await reader.snapshot(["a"])).records
    assert record.stale is False
    await writer.close()


async def test_fenced_writer_cannot_overwrite(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    await redis_client.set(keys.lease("a"), "owner-b")
    results: list[FlushResult] = []
    writer = BalanceWriter(redis_client, keys, fence=lambda _a: "owner-a", on_flush=results.extend)
    writer.start()
    writer.submit_update("a", "sfox", [bal("BTC", "9")])
    writer.submit_status("a", {"state": "live"})
    await writer.drain(5)
    assert results and all(r.fenced for r in results)
    assert await redis_client.exists(keys.balances("a")) == 0
    assert await BalanceReader(redis_client, keys).current_seq() == 0
    await writer.close()


async def test_nothing_is_lost_while_redis_is_down(tmp_path: Path, key_prefix: str) -> None:
    server = EmbeddedRedis(tmp_path / "r").start()  # AOF on: a restart keeps the data
    client = aioredis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
    errors: list[str] = []
    writer = BalanceWriter(client, Keys(key_prefix), on_error=lambda op, _e: errors.append(op))
    writer.start()
    writer.submit_snapshot("a", "bitopro", "", [bal("BTC", "1"), bal("ETH", "1")])
    await writer.drain(5)
    await asyncio.to_thread(server.stop)
    for n in range(2_000):  # many frames, few keys: pending memory is bounded by keys
        writer.submit_update("a", "bitopro", [bal("BTC", str(n)), bal(f"K{n % 5}", str(n))])
        if n % 100 == 0:
            await asyncio.sleep(0.01)
    assert writer.pending_keys() <= 6
    await eventually(lambda: bool(errors) and not writer.healthy, "the writer saw Redis fail")
    assert not await writer.drain(0.3)
    assert errors and not writer.healthy
    await asyncio.to_thread(server.start)
    assert await writer.drain(15)
    snap = await BalanceReader(client, Keys(key_prefix)).snapshot(["a"])
    state = {r.asset: r.total for r in snap.records}
    assert state["BTC"] == Decimal(1999)
    assert state["ETH"] == Decimal(1)
    assert {state[f"K{k}"] for k in range(5)} == {Decimal(1995 + k) for k in range(5)}
    await writer.close()
    await client.aclose()
    server.stop()


def test_decimal_text_is_canonical() -> None:
    assert decimal_str(Decimal("1.50000000")) == "1.5"
    assert decimal_str(Decimal("0E-8")) == "0"
    assert decimal_str(Decimal("1E+2")) == "100"
    assert decimal_str(Decimal("999999999999.99999999")) == "999999999999.99999999"


async def calls(client: aioredis.Redis, command: str) -> int:
    """How many times Redis ran ``command`` (``INFO commandstats``)."""
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_a_flush_is_one_round_trip_without_script_checks(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """Each flush sends its scripts by SHA1 alone: no ``SCRIPT EXISTS`` before it."""
    writer = BalanceWriter(redis_client, Keys(key_prefix))
    writer.submit_update("a", "bitopro", [bal("BTC", "1")])
    await writer.flush_once()  # the first flush loads the scripts
    exists, evalsha = (
        await calls(redis_client, "script|exists"),
        await calls(redis_client, "evalsha"),
    )
    for n in range(2, 5):
        writer.submit_update("a", "bitopro", [bal("BTC", str(n))])
        assert [r.changes for r in await writer.flush_once()] == [1]
    assert await calls(redis_client, "script|exists") == exists
    assert await calls(redis_client, "evalsha") == evalsha + 3


async def test_writes_go_on_after_redis_forgot_the_scripts(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    writer, reader = await make(redis_client, key_prefix)
    writer.submit_update("a", "bitopro", [bal("BTC", "1")])
    writer.submit_status("a", {"account": "a", "venue": "bitopro", "state": "live"})
    assert await writer.drain(10)
    await redis_client.script_flush()  # as after a restart: the cache is empty
    writer.submit_update("a", "bitopro", [bal("BTC", "2")])
    writer.submit_status("a", {"account": "a", "venue": "bitopro", "state": "stale"})
    assert await writer.drain(10)
    snap = await reader.snapshot(["a"])
    assert [(r.asset, r.total) for r in snap.records] == [("BTC", Decimal(2))]
    assert snap.statuses["a"]["state"] == "stale"
    await writer.close()


async def test_a_key_past_its_own_budget_is_not_kept_while_others_are(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    writer = BalanceWriter(redis_client, Keys(key_prefix), keep_per_key=2)
    for n in range(1, 5):
        writer.submit_update("a", "bitopro", [bal("BTC", str(n))])
    assert not writer.keeps("a", "", "BTC")  # but BTC's is: a caller need not build values
    assert writer.keeps("a", "", "ETH") and writer.keeps("b", "", "BTC")
