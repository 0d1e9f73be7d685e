"""Redis going away under a live service: nothing the venues said is lost (SPEC §11).

A private embedded Redis per test, paused with SIGSTOP (a stall longer than the lease) or
restarted without its data; the real simulators push over real sockets meanwhile, and the
state in Redis must end equal to the simulators' truth, with the accounts live only on
the connections the service still holds.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from app.accounts import AccountConfig
from app.redis_server import EmbeddedRedis
from app.services import Services
from app.simulators.runner import DEMO_WALLETS, Simulators
from app.simulators.solanatracker import BONK, USDC
from tests.integration.conftest import (
    account_for,
    converge,
    fast_settings,
    go_live,
    running_service,
    supervisor_of,
    wait_until,
)

_STREAM_ONLY_KEY = "sim-ds-stream-only"


def _accounts(sims: Simulators) -> list[AccountConfig]:
    """An sFOX account with web3 wallets and a stream-only SolanaTracker account.

    Neither can get those balances back from a REST snapshot: web3 wallets are learned
    from the stream, and without ``data_api_key`` SolanaTracker has no REST seed at all
    (its one holding is pushed once it is live, so the service knows all of it).
    """
    wallet = DEMO_WALLETS[0]
    sims.solanatracker.add_account(_STREAM_ONLY_KEY, None, [wallet], {wallet: {USDC: "1"}})
    return [
        account_for(sims, "sfox"),
        account_for(sims, "solanatracker", "solana-stream", key=_STREAM_ONLY_KEY),
    ]


async def _push_stream_only_changes(sims: Simulators, web3: str, solana: str) -> None:
    key = sims.default_keys["sfox"]
    (network, address, currency), _wallet = next(iter(sims.sfox.account(key).web3.items()))
    await sims.sfox.push_web3(key, address, network, currency, web3)
    await sims.solanatracker.push(_STREAM_ONLY_KEY, {DEMO_WALLETS[0]: {USDC: solana}})


def _key(account: AccountConfig) -> str | None:
    return _STREAM_ONLY_KEY if account.venue == "solanatracker" else None


async def _assert_truth_and_live(
    rt: Services, sims: Simulators, accounts: list[AccountConfig]
) -> None:
    for account in accounts:
        ours, truth = await converge(rt, sims, account.venue, account.id, _key(account), 30)
        assert ours == truth, account.id

    async def live_in_redis() -> bool:
        statuses = (await rt.reader.snapshot([a.id for a in accounts])).statuses
        return all(statuses.get(a.id, {}).get("state") == "live" for a in accounts)

    assert await wait_until(live_in_redis, 15)
    for account in accounts:
        runner = rt.supervisor.runner(account.id)
        assert runner is not None and str(runner.state) == "live", account.id


async def test_redis_stall_longer_than_the_lease_loses_nothing(
    sims: Simulators, tmp_path: Path, key_prefix: str
) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    assert server.pid is not None
    paused = False
    try:
        accounts = _accounts(sims)
        settings = fast_settings(server.url, key_prefix, lease_ms=2000)
        async with running_service(settings, accounts) as rt:
            for account in accounts:
                await go_live(rt, sims, account)
            await _push_stream_only_changes(sims, "250.5", "12.5")
            for account in accounts:
                ours, truth = await converge(rt, sims, account.venue, account.id, _key(account))
                assert ours == truth, account.id
            attempts = {a.id: rt.supervisor.runner(a.id).attempts for a in accounts}  # type: ignore[union-attr]

            os.kill(server.pid, signal.SIGSTOP)
            paused = True
            await _push_stream_only_changes(sims, "999.75", "77.125")

            async def lease_outlived() -> bool:
                # the writes failed and no renewal succeeded for longer than the lease
                expired = supervisor_of(rt).leases.expired_locally()
                return not rt.writer.healthy and expired >= {a.id for a in accounts}

            assert await wait_until(lease_outlived, 20)
            os.kill(server.pid, signal.SIGCONT)
            paused = False

            await _assert_truth_and_live(rt, sims, accounts)
            # the upstream sockets were kept: no reconnect was needed to get here
            for account in accounts:
                runner = rt.supervisor.runner(account.id)
                assert runner is not None and runner.attempts == attempts[account.id]
    finally:
        if paused:
            os.kill(server.pid, signal.SIGCONT)
        server.stop()


async def test_redis_restarted_without_its_data_gets_the_full_state_back(
    sims: Simulators, tmp_path: Path, key_prefix: str
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False).start()
    try:
        accounts = _accounts(sims)
        settings = fast_settings(server.url, key_prefix, lease_ms=2000)
        async with running_service(settings, accounts) as rt:
            for account in accounts:
                await go_live(rt, sims, account)
            await _push_stream_only_changes(sims, "999.75", "77.125")
            for account in accounts:
                ours, truth = await converge(rt, sims, account.venue, account.id, _key(account))
                assert ours == truth, account.id

            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)  # no AOF, no RDB: it comes back empty

            await _assert_truth_and_live(rt, sims, accounts)
    finally:
        server.stop()


async def test_no_partial_state_is_shown_live_after_redis_lost_its_data(
    sims: Simulators, tmp_path: Path, key_prefix: str
) -> None:
    """Deltas that arrive before the service noticed the empty Redis must not go in alone.

    Written by themselves they would show an account ``live`` with only the keys that just
    changed; they wait until the account's full state goes in with them, in one step.
    """
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False).start()
    try:
        accounts = _accounts(sims)
        # a slow lease tick (a third of 9 s): the writer meets the empty Redis first
        settings = fast_settings(server.url, key_prefix, lease_ms=9000)
        async with running_service(settings, accounts) as rt:
            for account in accounts:
                await go_live(rt, sims, account)
            await _push_stream_only_changes(sims, "999.75", "77.125")
            await sims.solanatracker.push(_STREAM_ONLY_KEY, {DEMO_WALLETS[0]: {BONK: "5000"}})
            expected: dict[str, set[tuple[str, str]]] = {}
            for account in accounts:
                ours, truth = await converge(rt, sims, account.venue, account.id, _key(account))
                assert ours == truth, account.id
                expected[account.id] = set(truth)

            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)  # no AOF, no RDB: it comes back empty
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 12
            step = 0
            while loop.time() < deadline:
                step += 1
                if step % 5 == 1:  # reconnects: status changes to write, with the deltas
                    sims.solanatracker.drop(_STREAM_ONLY_KEY)
                    sims.sfox.drop(sims.default_keys["sfox"])
                # only the sFOX web3 wallet and the Solana USDC change: a partial write
                await _push_stream_only_changes(sims, f"999.{step}", f"77.{step}")
                for _ in range(10):
                    await asyncio.sleep(0.02)
                    for account in accounts:
                        if rt.hub.account_view(account.id)["state"] != "live":
                            continue
                        shown = {(r.wallet, r.asset) for r in rt.hub.records([account.id])}
                        assert shown == expected[account.id], (account.id, shown)

            # a push made while its connection was dropped reached no one: once the sockets
            # are back, send the stream-only balances again so the service can know them
            async def delivered() -> bool:
                key = sims.default_keys["sfox"]
                (network, address, currency), wallet = next(
                    iter(sims.sfox.account(key).web3.items())
                )
                sent = await sims.sfox.push_web3(
                    key, address, network, currency, str(wallet.balance)
                )
                amount = sims.solanatracker.holdings[DEMO_WALLETS[0]][USDC]
                pushed = await sims.solanatracker.push(
                    _STREAM_ONLY_KEY, {DEMO_WALLETS[0]: {USDC: str(amount)}}
                )
                return bool(sent and pushed)

            assert await wait_until(delivered, 15, 0.2)
            await _assert_truth_and_live(rt, sims, accounts)
    finally:
        server.stop()
