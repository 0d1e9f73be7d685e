"""Upstream faults end to end: bad snapshots, quiet drops, refusals, redirects, heartbeats.

Each test drives the real service against a simulator (or a purpose-built fake venue
server) over real sockets, with a real Redis, and checks what clients would see.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import orjson
import pytest

from app.services import Services
from app.simulators.bitopro import BAD_SNAPSHOT_KINDS
from app.simulators.runner import DEMO_WALLETS, Simulators
from app.simulators.solanatracker import TRUMP, USDC, WSOL, transaction_room
from app.upstream import AccountRunner
from tests.integration.conftest import (
    account_for,
    converge,
    fast_settings,
    metric,
    running_service,
    service_state,
    wait_state,
    wait_until,
)


def _status(rt: Services, account: str) -> dict[str, object]:
    runner = rt.supervisor.runner(account)
    assert runner is not None
    return runner.status_doc()


@pytest.mark.parametrize("kind", BAD_SNAPSHOT_KINDS)
async def test_bitopro_rejected_snapshot_never_promotes_a_partial_frame(
    sims: Simulators, redis_url: str, key_prefix: str, kind: str
) -> None:
    account = account_for(sims, "bitopro")
    key = sims.default_keys["bitopro"]
    async with running_service(fast_settings(redis_url, key_prefix), [account]) as rt:
        await wait_state(rt, account.id, ["live"])
        before, truth = await converge(rt, sims, "bitopro", account.id)
        assert before == truth and ("", "ADA") in before
        sims.bitopro.bad_snapshot(key, kind, count=1_000)
        sims.bitopro.drop(key)
        rejected = {"account": account.id, "venue": "bitopro", "reason": "snapshot_rejected"}

        async def rejected_twice() -> bool:
            # a partial frame right behind every rejected first frame
            await sims.bitopro.push(key, {"BTC": "2.5"})
            return metric(rt, "balagg_upstream_errors_total", rejected) >= 2

        saw_rejections = await wait_until(rejected_twice, 20)
        await rt.writer.drain(1)
        during = await service_state(rt, account.id)
        # nothing deleted: ADA and the rest are still there, the last state kept
        assert set(during) == set(before)
        assert during[("", "ADA")] == before[("", "ADA")]
        status = _status(rt, account.id)
        assert status["state"] in ("syncing", "stale")
        assert "snapshot" in str(status["last_error"])
        assert saw_rejections
        sims.bitopro.bad_snapshot(key, kind, count=0)
        await wait_state(rt, account.id, ["live"], timeout=20)
        ours, truth = await converge(rt, sims, "bitopro", account.id)
        assert ours == truth and ours[("", "BTC")][0] == Decimal("2.5")


def _record_states(rt: Services, account: str) -> list[str]:
    """Every state the account's runner moves through from now on (in order)."""
    runner = rt.supervisor.runner(account)
    assert runner is not None
    seen: list[str] = []
    chained = runner.on_state

    def record(r: AccountRunner) -> None:
        seen.append(str(r.state))
        if chained is not None:
            chained(r)

    runner.on_state = record
    return seen


async def test_deltadefi_quiet_quick_drops_are_never_auth_failed(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    # DeltaDeFi sends nothing on connect: a drop right after connecting looks "quiet"
    account = account_for(sims, "deltadefi")
    key = sims.default_keys["deltadefi"]
    async with running_service(fast_settings(redis_url, key_prefix), [account]) as rt:
        await wait_state(rt, account.id, ["live"])
        states = _record_states(rt, account.id)
        for _ in range(5):
            total = sims.deltadefi.connection_counts(key).total
            await sims.deltadefi.wait_for_connections(key, 1)
            sims.deltadefi.drop(key)

            async def reconnected(before: int = total) -> bool:
                return sims.deltadefi.connection_counts(key).total > before

            assert await wait_until(reconnected)
        await wait_state(rt, account.id, ["live"])
        auth = {"account": account.id, "venue": "deltadefi", "reason": "auth"}
        assert "auth_failed" not in states
        assert metric(rt, "balagg_upstream_errors_total", auth) == 0
        ours, truth = await converge(rt, sims, "deltadefi", account.id)
        assert ours == truth


@pytest.mark.parametrize("venue", ["bitopro", "deltadefi", "solanatracker"])
async def test_a_key_that_worked_gets_normal_backoff_on_its_first_refusal(
    sims: Simulators, redis_url: str, key_prefix: str, venue: str
) -> None:
    account = account_for(sims, venue)
    key = sims.default_keys[venue]
    sim = sims[venue]
    settings = fast_settings(redis_url, key_prefix, auth_retry_min=30.0)
    async with running_service(settings, [account]) as rt:
        await wait_state(rt, account.id, ["live"])
        states = _record_states(rt, account.id)
        sim.refuse_auth(key)
        sim.drop(key)

        async def refused_twice() -> bool:
            return sim.connection_counts(key).refused >= 2

        assert await wait_until(refused_twice)
        await wait_state(rt, account.id, ["auth_failed"])
        # the first refusal of a key that worked: stale with the normal backoff
        assert states[: states.index("auth_failed")].count("stale") >= 1
        sim.refuse_auth(key, False)
        await rt.supervisor.resync(account.id)
        await wait_state(rt, account.id, ["live"])


async def test_a_key_that_never_worked_is_auth_failed_at_once(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    bad = account_for(sims, "deltadefi", "deltadefi-bad", api_key="wrong-key-0000")
    async with running_service(fast_settings(redis_url, key_prefix), [bad]) as rt:
        await wait_state(rt, bad.id, ["auth_failed"])
        runner = rt.supervisor.runner(bad.id)
        assert runner is not None and runner.attempts == 1


async def test_every_drop_is_logged_once_with_its_reason_and_no_secret(
    sims: Simulators, redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    canary = "CANARY-DDF-KEY-31337"
    sims.deltadefi.add_account(canary, {"ada": "5"})
    account = account_for(sims, "deltadefi", "deltadefi-canary", key=canary)
    caplog.set_level(logging.INFO, logger="app.upstream")
    async with running_service(fast_settings(redis_url, key_prefix), [account]) as rt:
        await wait_state(rt, account.id, ["live"])
        await sims.deltadefi.wait_for_connections(canary, 1)
        for conn in sims.deltadefi.connections(canary):
            await sims.deltadefi.close_connection(conn, 4001, b"maintenance")

        def ended() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if "upstream connection ended" in r.getMessage()
            ]

        async def logged(n: int) -> bool:
            return len(ended()) >= n

        assert await wait_until(lambda: logged(1))
        assert "code 4001" in ended()[0] and "(closed)" in ended()[0]
        await wait_state(rt, account.id, ["live"])
        sims.deltadefi.refuse_auth(canary)
        sims.deltadefi.drop(canary)
        assert await wait_until(lambda: logged(3))
        lines = ended()
        assert "without a close frame" in lines[1]
        assert "HTTP 401" in lines[2] and "(auth)" in lines[2]
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert canary not in text


async def test_solanatracker_json_pings_are_answered_and_counted_as_pings(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    sim = sims.solanatracker
    sim.app_ping_interval, sim.app_pong_timeout = 0.1, 0.5  # silent clients are dropped
    account = account_for(sims, "solanatracker")
    key = sims.default_keys["solanatracker"]
    async with running_service(fast_settings(redis_url, key_prefix), [account]) as rt:
        await wait_state(rt, account.id, ["live"])
        labels = {"account": account.id, "venue": "solanatracker"}

        async def pinged() -> bool:
            return metric(rt, "balagg_upstream_messages_total", {**labels, "kind": "ping"}) >= 10

        assert await wait_until(pinged)
        assert sim.connection_counts(key).total == 1  # answered every ping: never dropped
        for reason in ("unknown_event", "schema", "parse"):
            assert metric(rt, "balagg_upstream_errors_total", {**labels, "reason": reason}) == 0
        assert str(_status(rt, account.id)["state"]) == "live"


async def _symbols(rt: Services, account: str) -> dict[tuple[str, str], str | None]:
    await rt.writer.drain(1)
    snap = await rt.reader.snapshot([account])
    return {(r.wallet, r.asset): r.symbol for r in snap.records}


async def _price_doc(rt: Services, mint: str) -> dict[str, object]:
    raw = await rt.redis.hget(rt.keys.prices, mint)
    return {} if raw is None else dict(orjson.loads(raw))


async def test_solanatracker_symbols_survive_reconnects_and_restarts(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    account = account_for(sims, "solanatracker")
    key = sims.default_keys["solanatracker"]
    sim = sims.solanatracker
    wallet = DEMO_WALLETS[0]
    settings = fast_settings(redis_url, key_prefix)
    async with running_service(settings, [account]) as rt:
        await wait_state(rt, account.id, ["live"])

        async def joined() -> bool:
            return all(sim.room_members(transaction_room(m)) >= 1 for m in (TRUMP, WSOL))

        assert await wait_until(joined)
        await sim.push_swap(TRUMP, "7.5")
        await sim.push_swap(WSOL, "151")

        async def learned() -> bool:
            return (await _price_doc(rt, WSOL)).get("price_usd") == "151" and (
                await _price_doc(rt, TRUMP)
            ).get("price_usd") == "7.5"

        assert await wait_until(learned)
        before = await _symbols(rt, account.id)
        assert before[(wallet, TRUMP)] == "TRUMP"
        assert before[(wallet, WSOL)] == "wSOL"  # the built-in table, always
        assert before[(wallet, USDC)] == "USDC"
        seeds = {"account": account.id, "venue": "solanatracker", "kind": "rest_snapshot"}
        seeded = metric(rt, "balagg_upstream_messages_total", seeds)
        sim.drop(key)

        async def reseeded() -> bool:
            runner = rt.supervisor.runner(account.id)
            again = metric(rt, "balagg_upstream_messages_total", seeds) >= seeded + 2
            return again and runner is not None and str(runner.state) == "live"

        assert await wait_until(reseeded)
        assert await _symbols(rt, account.id) == before
        trump = await _price_doc(rt, TRUMP)
        assert trump.get("symbol") == "TRUMP" and trump.get("name") == "OFFICIAL TRUMP"
        assert (await _price_doc(rt, WSOL)).get("symbol") == "wSOL"
    async with running_service(settings, [account]) as rt:  # a restart: a fresh fold
        await wait_state(rt, account.id, ["live"])
        seeds = {"account": account.id, "venue": "solanatracker", "kind": "rest_snapshot"}

        async def seeded_twice() -> bool:
            return metric(rt, "balagg_upstream_messages_total", seeds) >= 2

        assert await wait_until(seeded_twice)
        assert await _symbols(rt, account.id) == before
        assert (await _price_doc(rt, TRUMP)).get("symbol") == "TRUMP"
