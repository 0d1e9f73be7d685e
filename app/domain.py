"""Domain values shared by every layer: venues, balances and the events a venue parser emits.

The flow is ``raw frame -> venues.<venue> parser -> events (this module) -> fold -> store``.
Everything here is an immutable value with exact ``Decimal`` amounts; nothing does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact, InvalidOperation, Rounded
from typing import TYPE_CHECKING, Annotated, Any, Final

from pydantic import Field

from app.names import AccountState as AccountState  # re-exported: the domain's vocabulary
from app.names import Venue as Venue

if TYPE_CHECKING:
    from app.prices.model import Price


EXACT: Final = Context(prec=100, traps=[Inexact, Rounded, InvalidOperation])
"""The one arithmetic context for amounts: it never rounds (it raises instead). Venue
amounts are bounded to 40 integer and 40 fraction digits (app.venues._wire), so sums and
differences of them are exact."""


def adds_up(total: Decimal, available: Decimal, locked: Decimal) -> bool:
    """The balance invariant ``total == available + locked``, computed exactly."""
    return EXACT.add(available, locked) == total


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """The lifecycle status of one account as stored, broadcast and served (SPEC §7).

    The owner writes it (without ``last_message_at``, which the store keeps beside it) on
    every state change; readers fill in ``last_message_at`` and defaults. It is also the
    ``GET /v1/accounts`` response shape.
    """

    account: str
    venue: Venue
    state: AccountState
    connected_since: str | None
    last_message_at: str | None
    reconnects: int
    last_error: str | None
    owner: Annotated[str | None, Field(description="instance holding the account's lease")]

    @classmethod
    def initial(cls, account: str, venue: Venue | str, state: AccountState) -> AccountStatus:
        """An account nothing is known about yet beyond its ``state``."""
        return cls(account, Venue(venue), state, None, None, 0, None, None)

    def doc(self) -> dict[str, Any]:
        """The lifecycle JSON the owner stores (``last_message_at`` is kept beside it)."""
        return {
            "account": self.account,
            "venue": self.venue.value,
            "state": self.state.value,
            "connected_since": self.connected_since,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "owner": self.owner,
        }

    def view(self) -> dict[str, Any]:
        """Every field, as ``GET /v1/accounts`` and the stream's snapshot show them."""
        return {
            "account": self.account,
            "venue": self.venue.value,
            "state": self.state.value,
            "connected_since": self.connected_since,
            "last_message_at": self.last_message_at,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "owner": self.owner,
        }


EXCHANGE_WALLET = ""
"""The ``wallet`` of an exchange (custodial) account's own balances."""

ExtraValue = str | bool | int | None


@dataclass(frozen=True, slots=True)
class AssetBalance:
    """One asset's balance in one wallet, as a venue reported it.

    ``total == available + locked`` always holds (:func:`adds_up`, checked on creation);
    venues that send only two of the three are completed by :meth:`from_total_available` /
    :meth:`from_available_locked`.
    """

    wallet: str
    asset: str
    total: Decimal
    available: Decimal
    locked: Decimal
    symbol: str | None = None
    extra: Mapping[str, ExtraValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not adds_up(self.total, self.available, self.locked):
            raise ValueError(
                f"{self.asset}: total {self.total} != available {self.available} + locked "
                f"{self.locked}"
            )

    @classmethod
    def from_total_available(
        cls,
        wallet: str,
        asset: str,
        total: Decimal,
        available: Decimal,
        *,
        symbol: str | None = None,
        extra: Mapping[str, ExtraValue] | None = None,
    ) -> AssetBalance:
        locked = EXACT.subtract(total, available)
        return cls(wallet, asset, total, available, locked, symbol, extra or {})

    @classmethod
    def from_available_locked(
        cls,
        wallet: str,
        asset: str,
        available: Decimal,
        locked: Decimal,
        *,
        symbol: str | None = None,
        extra: Mapping[str, ExtraValue] | None = None,
    ) -> AssetBalance:
        total = EXACT.add(available, locked)
        return cls(wallet, asset, total, available, locked, symbol, extra or {})


LoneBalance = tuple[str, str, Decimal, Decimal, Decimal, Mapping[str, ExtraValue], str | None]
"""One asset's new balance read straight from a frame, without an event around it:
``(wallet, asset, total, available, locked, extra, venue_ts)``, the asset being its own
symbol. Means exactly ``BalanceUpdate((AssetBalance(wallet, asset, total, available,
locked, asset, extra),), venue_ts)``; read by
:meth:`~app.venues.base.VenueSession.read_lone_balance`."""


@dataclass(frozen=True, slots=True)
class BalanceSnapshot:
    """The complete state of one wallet scope: every asset not listed is gone.

    ``wallet`` is the scope being replaced (``""`` for the exchange account itself).
    """

    wallet: str
    balances: tuple[AssetBalance, ...]
    venue_ts: str | None = None


@dataclass(frozen=True, slots=True)
class BalanceUpdate:
    """New values for some assets; assets not listed are untouched."""

    balances: tuple[AssetBalance, ...]
    venue_ts: str | None = None


@dataclass(frozen=True, slots=True)
class PriceUpdate:
    """A USD price and token metadata learned for a Solana mint (transactions room)."""

    mint: str
    price_usd: Decimal | None
    symbol: str | None = None
    name: str | None = None
    decimals: int | None = None


@dataclass(frozen=True, slots=True)
class VenueEvent:
    """Something worth re-broadcasting that never changes balances (SPEC §5)."""

    kind: str  # "order" | "points" | "swap"
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ControlReply:
    """A protocol control message: sFOX success/error, SolanaTracker joined, ...

    ``ok`` false means the venue refused (e.g. sFOX authenticate error).
    """

    action: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SequenceGap:
    """The venue's per-connection sequence skipped or went backwards: resync."""

    expected: int
    received: int


@dataclass(frozen=True, slots=True)
class MarketPrice:
    """A market price read on an account's own socket (sFOX ticker, SolanaTracker price
    room). It never changes balances: the connection loop hands it to the price recorder."""

    price: Price


Event = (
    BalanceSnapshot
    | BalanceUpdate
    | PriceUpdate
    | VenueEvent
    | ControlReply
    | SequenceGap
    | MarketPrice
)


@dataclass(frozen=True, slots=True)
class BalanceRecord:
    """The unified record stored and served (SPEC §4)."""

    account: str
    venue: str
    wallet: str
    asset: str
    symbol: str | None
    total: Decimal
    available: Decimal
    locked: Decimal
    updated_at: str
    venue_ts: str | None
    stale: bool
    extra: Mapping[str, ExtraValue]
