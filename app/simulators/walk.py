"""A random walk that keeps the simulators' balances moving (the ``demo`` command).

Each step changes one random balance through the simulator's own ``push`` (so the truth
and the frames stay together), or sends a venue event: an sFOX web3 wallet update, a
DeltaDeFi order or points event, a SolanaTracker swap with a new price, or a step of one
venue's market prices (:meth:`~app.simulators.market.PriceFeed.walk`). With ``drops``
it now and then drops a connection so account states move too. Amounts move in the
venue's smallest unit with integer arithmetic: exact, and never negative.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from decimal import ROUND_DOWN, Decimal
from typing import Any

from app.simulators.bitopro import BitoproSimulator
from app.simulators.deltadefi import ORDER_STATUSES, DeltaDefiSimulator
from app.simulators.server import VenueSimulator
from app.simulators.sfox import SfoxSimulator
from app.simulators.solanatracker import TOKENS, USDC, SolanaTrackerSimulator, token_info


def walk_amount(rng: random.Random, amount: Decimal, places: int) -> Decimal:
    """``amount`` moved by up to about 2 % (at least 0.01), in units of ``10**-places``."""
    units = int(amount.scaleb(places).to_integral_value(ROUND_DOWN))
    step = max(units // 50, 10**places // 100, 1)
    return Decimal(max(0, units + rng.randint(-step, step))).scaleb(-places)


def walk_locked(rng: random.Random, locked: Decimal, total: Decimal, places: int) -> Decimal:
    """A locked part that mostly stays put and sometimes re-rolls (never above total)."""
    if rng.random() < 0.2:
        units = int(total.scaleb(places).to_integral_value(ROUND_DOWN))
        return Decimal(rng.randint(0, units // 4)).scaleb(-places)
    return min(locked, total)


class RandomWalk:
    """Changes random balances at ``rate`` steps per second until stopped."""

    def __init__(
        self,
        bitopro: BitoproSimulator,
        sfox: SfoxSimulator,
        deltadefi: DeltaDefiSimulator,
        solanatracker: SolanaTrackerSimulator,
        *,
        rate: float = 4.0,
        drops: bool = False,
        seed: int | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.bitopro = bitopro
        self.sfox = sfox
        self.deltadefi = deltadefi
        self.solanatracker = solanatracker
        self.rate = rate
        self.drops = drops
        self.steps = 0
        self._rng = random.Random(seed)
        self._task: asyncio.Task[None] | None = None
        actions: list[tuple[Callable[[], Awaitable[bool]], int]] = [
            (self._bitopro, 20),
            (self._sfox, 15),
            (self._sfox_web3, 5),
            (self._deltadefi, 15),
            (self._deltadefi_order, 5),
            (self._deltadefi_points, 5),
            (self._solana, 15),
            (self._solana_swap, 15),
            (self._prices, 10),
        ]
        if drops:
            actions.append((self._drop, 2))
        self._actions = [a for a, _ in actions]
        self._weights = [w for _, w in actions]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._rng.expovariate(self.rate))
            await self.step()

    async def step(self) -> bool:
        """One random action; whether it changed or sent anything."""
        action = self._rng.choices(self._actions, self._weights)[0]
        self.steps += 1
        return await action()

    def _key(self, sim: VenueSimulator[Any]) -> str | None:
        keys = sim.account_keys()
        return self._rng.choice(keys) if keys else None

    async def _prices(self) -> bool:
        """Move one venue's market prices a little (its price stream pushes them)."""
        sims: list[VenueSimulator[Any]] = [
            self.bitopro, self.sfox, self.deltadefi, self.solanatracker,
        ]  # fmt: skip
        await self._rng.choice(sims).price_feed.walk(self._rng)
        return True

    async def _bitopro(self) -> bool:
        key = self._key(self.bitopro)
        if key is None:
            return False
        balances = self.bitopro.account(key).balances
        cur = self._rng.choice(sorted(balances)) if balances else "BTC"
        old = balances.get(cur)
        amount = walk_amount(self._rng, old.amount if old else Decimal(1), 8)
        old_locked = old.amount - old.available if old else Decimal(0)
        locked = walk_locked(self._rng, old_locked, amount, 8)
        await self.bitopro.push(
            key, {cur: {"amount": str(amount), "available": str(amount - locked)}}
        )
        return True

    async def _sfox(self) -> bool:
        key = self._key(self.sfox)
        if key is None:
            return False
        balances = self.sfox.account(key).balances
        cur = self._rng.choice(sorted(balances)) if balances else "usd"
        old = balances.get(cur)
        total = walk_amount(self._rng, old.balance if old else Decimal(100), 8)
        held = walk_locked(self._rng, old.held if old else Decimal(0), total, 8)
        await self.sfox.push(key, {cur: {"balance": str(total), "held": str(held)}})
        return True

    async def _sfox_web3(self) -> bool:
        key = self._key(self.sfox)
        if key is None:
            return False
        wallets = self.sfox.account(key).web3
        if not wallets:
            return False
        wallet = wallets[self._rng.choice(sorted(wallets))]
        balance = walk_amount(self._rng, wallet.balance, 6)
        await self.sfox.push_web3(key, wallet.address, wallet.network, wallet.currency, balance)
        return True

    async def _deltadefi(self) -> bool:
        key = self._key(self.deltadefi)
        if key is None:
            return False
        balances = self.deltadefi.account(key).balances
        asset = self._rng.choice(sorted(balances)) if balances else "ada"
        old = balances.get(asset)
        total = walk_amount(self._rng, (old.free + old.locked) if old else Decimal(100), 6)
        locked = walk_locked(self._rng, old.locked if old else Decimal(0), total, 6)
        await self.deltadefi.push(
            key, {asset: {"free": str(total - locked), "locked": str(locked)}}
        )
        return True

    async def _deltadefi_order(self) -> bool:
        key = self._key(self.deltadefi)
        if key is None:
            return False
        side = self._rng.choice(("buy", "sell"))
        price = Decimal(self._rng.randint(80, 110)).scaleb(-2)
        qty = Decimal(self._rng.randint(1, 500))
        order = {
            "status": self._rng.choice(ORDER_STATUSES),
            "side": side,
            "price": str(price),
            "base_qty": f"{qty}.00",
            "quote_qty": str((qty * price).quantize(Decimal("0.01"))),
        }
        await self.deltadefi.push_order(key, order)
        return True

    async def _deltadefi_points(self) -> bool:
        key = self._key(self.deltadefi)
        if key is None:
            return False
        await self.deltadefi.push_points(key, self._rng.randint(1, 300))
        return True

    async def _solana(self) -> bool:
        key = self._key(self.solanatracker)
        if key is None:
            return False
        wallets = self.solanatracker.account(key).wallets
        if not wallets:
            return False
        wallet = self._rng.choice(wallets)
        held = self.solanatracker.holdings.get(wallet, {})
        mint = self._rng.choice(sorted(held)) if held else USDC
        places = min(token_info(mint).decimals, 6)
        amount = walk_amount(self._rng, held.get(mint, Decimal(100)), places)
        await self.solanatracker.push(key, {wallet: {mint: str(amount)}})
        return True

    async def _solana_swap(self) -> bool:
        mint = self._rng.choice(sorted(m for m in TOKENS if m != USDC))
        price = self.solanatracker.prices.get(mint, Decimal(1))
        factor = Decimal(10000 + self._rng.randint(-200, 200)).scaleb(-4)
        new_price = (price * factor).quantize(Decimal("1e-12"))
        if new_price <= 0:
            new_price = price
        amount = Decimal(self._rng.randint(1, 10_000)).scaleb(-2)
        side = self._rng.choice(("buy", "sell"))
        await self.solanatracker.push_swap(mint, new_price, side=side, amount=amount)
        return True

    async def _drop(self) -> bool:
        sims: list[VenueSimulator[Any]] = [
            self.bitopro,
            self.sfox,
            self.deltadefi,
            self.solanatracker,
        ]
        sim = self._rng.choice(sims)
        key = self._key(sim)
        return key is not None and sim.drop(key) > 0
