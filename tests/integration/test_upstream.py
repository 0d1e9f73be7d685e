"""Upstream connections end to end: real simulators, real sockets, real Redis."""

from __future__ import annotations

import asyncio
import logging
import random
from decimal import Decimal

import orjson
import pytest

from app.simulators.runner import DEMO_WALLETS, Simulators
from app.simulators.solanatracker import USDC, WSOL
from tests.integration.conftest import (
    account_for,
    all_default_accounts,
    converge,
    fast_settings,
    go_live,
    metric,
    running_service,
    service_state,
    wait_state,
    wait_until,
)

VENUES = ("bitopro", "sfox", "deltadefi", "solanatracker")


async def push_random(sims: Simulators, venue: str, rng: random.Random, n: int) -> None:
    """``n`` random changes the venue's way (exact decimals, never negative)."""
    key = sims.default_keys[venue]
    sim = sims[venue]
    for _ in range(n):
        amount = f"{rng.randint(0, 10**6)}.{rng.randint(0, 10**8):08d}"
        if venue == "bitopro":
            await sim.push(key, {rng.choice(["BTC", "ETH", "NEW1", "NEW2"]): amount})
        elif venue == "sfox":
            await sim.push(key, {rng.choice(["btc", "eth", "usd", "sol"]): amount})
        elif venue == "deltadefi":
            await sim.push(key, {rng.choice(["usdm", "ada", "iag"]): amount})
        else:
            wallet = rng.choice(DEMO_WALLETS)
            await sim.push(key, {wallet: {rng.choice([USDC, WSOL]): amount}})


async def test_all_four_venues_end_to_end(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    accounts = all_default_accounts(sims)
    # the famous 12+8 digit amount (the demo holds a plausible one): in the first snapshot
    await sims.bitopro.push(sims.default_keys["bitopro"], {"ADA": "999999999999.99999999"})
    async with running_service(fast_settings(redis_url, key_prefix), accounts) as rt:
        for account in accounts:
            await go_live(rt, sims, account)
            ours, truth = await converge(rt, sims, account.venue, account.id)
            assert ours == truth and truth, account.id
        # ... survives exactly
        bitopro = await service_state(rt, "bitopro-main")
        assert bitopro[("", "ADA")][0] == Decimal("999999999999.99999999")
        rng = random.Random(7)
        for venue in VENUES:
            await push_random(sims, venue, rng, 50)
        for venue in VENUES:
            key = sims.default_keys[venue]
            result = await sims[venue].burst(key, 10_000)
            assert result.frames >= 10_000
        for account in accounts:
            ours, truth = await converge(rt, sims, account.venue, account.id, timeout=30)
            assert ours == truth, account.id
        # removal: BitoPro forgets a currency; the next connection's snapshot drops it
        key = sims.default_keys["bitopro"]
        assert await sims.bitopro.remove_asset(key, "ETH")
        sims.bitopro.drop(key)
        ours, truth = await converge(rt, sims, "bitopro", "bitopro-main")
        assert ("", "ETH") not in ours and ours == truth


@pytest.mark.slow
@pytest.mark.parametrize("venue", VENUES)
async def test_twenty_drops_while_changes_flow(
    sims: Simulators, redis_url: str, key_prefix: str, venue: str
) -> None:
    account = account_for(sims, venue)
    settings = fast_settings(redis_url, key_prefix)
    async with running_service(settings, [account]) as rt:
        await go_live(rt, sims, account)
        await converge(rt, sims, venue, account.id)
        rng = random.Random(venue)
        key = sims.default_keys[venue]
        seq_before = await rt.reader.current_seq()
        min_rows = len(await service_state(rt, account.id))

        stop = asyncio.Event()

        async def watch() -> None:
            nonlocal min_rows
            while not stop.is_set():
                snap = await rt.reader.snapshot([account.id])
                min_rows = min(min_rows, len(snap.records))
                if snap.statuses.get(account.id, {}).get("state") == "stale":
                    assert all(r.stale for r in snap.records)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        for _ in range(20):
            await push_random(sims, venue, rng, rng.randint(1, 5))
            await asyncio.sleep(rng.random() * 0.05)
            connections = sims[venue].connection_counts(key).total
            sims[venue].drop(key)
            await push_random(sims, venue, rng, rng.randint(0, 3))  # changes while down

            async def reconnected(before: int = connections) -> bool:
                return sims[venue].connection_counts(key).total > before

            assert await wait_until(reconnected, 20)
            await wait_state(rt, account.id, ["live"], timeout=20)
        stop.set()
        await watcher
        ours, truth = await converge(rt, sims, venue, account.id, timeout=30)
        assert ours == truth
        changes = [orjson.loads(c.message) for c in await rt.reader.changes_since(seq_before)]
        states = [c["account"]["state"] for c in changes if c["type"] == "status"]
        assert states.count("stale") >= 20  # flagged stale on every drop...
        assert not [c for c in changes if c["type"] == "removed"]  # ...and never emptied
        assert min_rows > 0
        reconnects = sum(
            metric(rt, "balagg_upstream_reconnects_total",
                   {"account": account.id, "venue": venue, "reason": reason})
            for reason in ("closed", "network", "read_timeout")
        )  # fmt: skip
        assert reconnects >= 20


async def test_bitopro_currency_gone_while_disconnected(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    account = account_for(sims, "bitopro")
    key = sims.default_keys["bitopro"]
    async with running_service(fast_settings(redis_url, key_prefix), [account]) as rt:
        await wait_state(rt, account.id, ["live"])
        await converge(rt, sims, "bitopro", account.id)
        sims.bitopro.refuse_auth(key)  # keep it down while the currency disappears
        sims.bitopro.drop(key)
        await wait_state(rt, account.id, ["stale", "auth_failed"])
        assert ("", "USDT") in await service_state(rt, account.id)  # still shown while down
        await sims.bitopro.remove_asset(key, "USDT")
        sims.bitopro.refuse_auth(key, False)
        await rt.supervisor.resync(account.id)
        await wait_state(rt, account.id, ["live"], timeout=20)
        ours, truth = await converge(rt, sims, "bitopro", account.id)
        assert ("", "USDT") not in ours and ours == truth


@pytest.mark.parametrize("fault", ["gap", "reorder", "duplicate"])
async def test_sfox_sequence_faults_are_detected_and_resynced(
    sims: Simulators, redis_url: str, key_prefix: str, fault: str
) -> None:
    account = account_for(sims, "sfox")
    key = sims.default_keys["sfox"]
    async with running_service(fast_settings(redis_url, key_prefix), [account]) as rt:
        await go_live(rt, sims, account)
        await converge(rt, sims, "sfox", account.id)
        attempts_before = sims.sfox.connection_counts(key).total
        await sims.sfox.sequence_fault(key, fault)
        await sims.sfox.push(key, {"btc": "3.14159265"})
        labels = {"account": account.id, "venue": "sfox", "reason": "sequence_gap"}

        async def counted() -> bool:
            return metric(rt, "balagg_upstream_errors_total", labels) >= 1

        assert await wait_until(counted)
        assert await wait_until(
            lambda: _true(sims.sfox.connection_counts(key).total > attempts_before)
        )
        await wait_state(rt, account.id, ["live"])
        await sims.sfox.push(key, {"eth": "2.71828"})
        ours, truth = await converge(rt, sims, "sfox", account.id)
        assert ours == truth


async def _true(value: bool) -> bool:
    return value


async def test_bad_credentials_retry_slowly_without_hurting_others(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    bad = account_for(sims, "deltadefi", "deltadefi-bad", api_key="wrong-key-0000")
    good = account_for(sims, "sfox")
    async with running_service(fast_settings(redis_url, key_prefix), [bad, good]) as rt:
        await wait_state(rt, "deltadefi-bad", ["auth_failed"])
        await go_live(rt, sims, good)
        runner = rt.supervisor.runner("deltadefi-bad")
        assert runner is not None
        before = runner.attempts
        await asyncio.sleep(3.0)
        # auth_retry_min=1 s doubling with jitter: at most 2 more tries in 3 s, not a hot loop
        assert runner.attempts - before <= 2
        await sims.sfox.push(sims.default_keys["sfox"], {"btc": "9.5"})
        ours, truth = await converge(rt, sims, "sfox", good.id)
        assert ours == truth
        status = (await rt.reader.snapshot(["deltadefi-bad"])).statuses["deltadefi-bad"]
        assert status["state"] == "auth_failed"
        labels = {"account": "deltadefi-bad", "venue": "deltadefi", "reason": "auth"}
        assert metric(rt, "balagg_upstream_errors_total", labels) >= 1


async def test_malformed_frames_are_rejected_whole_and_counted(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    accounts = all_default_accounts(sims)
    async with running_service(fast_settings(redis_url, key_prefix), accounts) as rt:
        for account in accounts:
            await go_live(rt, sims, account)
        rng = random.Random(3)
        sent = 0
        for i in range(1_000):
            venue = VENUES[i % 4]
            sim = sims[venue]
            kinds = [k for k in sim.malformed_kinds if k != "oversize" or i % 100 == 0]
            sent += await sim.send_malformed(sims.default_keys[venue], rng.choice(kinds))
            if i % 50 == 0:
                await push_random(sims, venue, rng, 1)
        assert sent >= 900
        for account in accounts:
            ours, truth = await converge(rt, sims, account.venue, account.id)
            assert ours == truth, account.id
        total_errors = 0.0
        for account in accounts:
            for reason in ("parse", "schema", "amount", "oversize", "unknown_event"):
                total_errors += metric(
                    rt, "balagg_upstream_errors_total",
                    {"account": account.id, "venue": account.venue, "reason": reason},
                )  # fmt: skip
        assert total_errors >= sent * 0.9


async def test_canary_secrets_never_reach_the_logs(
    sims: Simulators, redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    canary = "CANARY-7f3a9c"
    keys = {
        "bitopro": sims.bitopro.add_account(
            f"{canary}-bp-key", f"{canary}-bp-secret", f"{canary}@example.com", {"BTC": "1"}
        ),
        "sfox": sims.sfox.add_account(f"{canary}-sfox-key", {"btc": "1"}),
        "deltadefi": sims.deltadefi.add_account(f"{canary}-ddf-key", {"ada": "1"}),
        "solanatracker": sims.solanatracker.add_account(
            f"{canary}-ds-key",
            f"{canary}-data-key",
            [DEMO_WALLETS[0]],
            {DEMO_WALLETS[0]: {USDC: "1"}},
        ),
    }
    accounts = [account_for(sims, v, f"{v}-canary", key=k) for v, k in keys.items()]
    caplog.set_level(logging.DEBUG)
    async with running_service(fast_settings(redis_url, key_prefix), accounts) as rt:
        for account in accounts:
            await wait_state(rt, account.id, ["live"])
        for venue, key in keys.items():
            sims[venue].drop(key)
            await sims[venue].send_malformed(key, "bad_json") if "bad_json" in sims[
                venue
            ].malformed_kinds else None
        for account in accounts:
            await wait_state(rt, account.id, ["live"])
        metrics_text = (await asyncio.to_thread(_scrape, rt)).decode()
        statuses = (await rt.reader.snapshot([a.id for a in accounts])).statuses
    text = caplog.text
    assert "connecting to" in text  # URLs were logged, in their redacted form
    assert canary not in text
    assert canary not in metrics_text
    assert canary not in orjson.dumps(statuses).decode()


def _scrape(rt: object) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(rt.metrics.registry)  # type: ignore[attr-defined]


async def test_stalled_connection_is_detected_by_ping_pong(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    """A venue that stops sending and stops answering pings, without closing, is left for a
    fresh connection after the heartbeat's pong deadline; a quiet healthy one is not."""
    account = account_for(sims, "deltadefi")
    key = sims.default_keys["deltadefi"]
    async with running_service(fast_settings(redis_url, key_prefix), [account]) as rt:
        await go_live(rt, sims, account)
        quiet_since = sims.deltadefi.connection_counts(key).total
        await asyncio.sleep(2.5)  # quiet but answering pings: the connection stays
        assert sims.deltadefi.connection_counts(key).total == quiet_since
        sims.deltadefi.stall(key)
        await sims.deltadefi.push(key, {"ada": "77.5"})  # lost on the stalled link

        async def replaced() -> bool:
            return sims.deltadefi.connection_counts(key).total > quiet_since

        assert await wait_until(replaced, 10)
        ours, truth = await converge(rt, sims, "deltadefi", account.id)
        assert ours == truth  # the REST re-seed brought the change lost on the stalled link
