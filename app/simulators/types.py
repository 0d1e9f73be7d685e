"""Values and errors shared by the venue simulators.

Exceptions::

    SimulatorError         a scripted request the simulator cannot carry out (HTTP 400)
    +-- UnknownAccount     no account holds that credential (HTTP 404)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

Amount = Decimal | str | int
"""An exact amount as scripts pass it: a ``Decimal``, a decimal string or an integer."""

JsonObject = Mapping[str, Any]


class SimulatorError(Exception):
    """A scripted request was invalid (bad amount, unknown kind, ...)."""


class UnknownAccount(SimulatorError):
    """No account of this simulator holds the given credential."""


@dataclass(frozen=True, slots=True)
class TruthRow:
    """One balance the simulator holds, in the unified shape of SPEC §4.

    ``wallet`` is ``""`` for an exchange account, ``"web3:<network>:<address>"`` for an
    sFOX web3 wallet and the wallet address for SolanaTracker; ``asset`` is the currency
    code upper-cased, or the mint address unchanged for Solana.
    """

    wallet: str
    asset: str
    total: Decimal
    available: Decimal
    locked: Decimal

    def as_json(self) -> dict[str, str]:
        return {
            "wallet": self.wallet,
            "asset": self.asset,
            "total": str(self.total),
            "available": str(self.available),
            "locked": str(self.locked),
        }


@dataclass(frozen=True, slots=True)
class ConnectionCounts:
    """Connections of one credential: open now, accepted in total, and refused."""

    open: int
    total: int
    refused: int

    def as_json(self) -> dict[str, int]:
        return {"open": self.open, "total": self.total, "refused": self.refused}


@dataclass(frozen=True, slots=True)
class BurstResult:
    """What a burst wrote: frames over all connections and the rate of the send loop.

    ``prepare_seconds`` (serialising and framing) is not part of ``seconds``/``rate``.
    """

    frames: int
    connections: int
    seconds: float
    prepare_seconds: float

    @property
    def rate(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "connections": self.connections,
            "seconds": self.seconds,
            "prepare_seconds": self.prepare_seconds,
            "rate": self.rate,
        }
