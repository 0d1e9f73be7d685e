"""Venue simulators: one aiohttp server per venue speaking its real protocol.

They serve the venues' WebSockets and REST snapshot endpoints at the real paths, check
credentials the venue's way, keep exact ``Decimal`` balances as the truth, and are
scriptable in-process (async Python API) or over HTTP (``/_sim/...``, see
:mod:`.control`): set balances, push changes, bursts, malformed frames, dropped and
stalled connections, refused auth. They back the ``demo`` and ``simulate`` commands,
the integration tests and the benchmarks. They implement each protocol from the venue
facts independently of the service's own venue parsers, so a misreading cannot hide on
both sides.
"""

from app.simulators.bitopro import BitoproSimulator
from app.simulators.deltadefi import DeltaDefiSimulator
from app.simulators.runner import Simulators, run_simulate, start_simulators
from app.simulators.server import VenueSimulator
from app.simulators.sfox import SfoxSimulator
from app.simulators.solanatracker import SolanaTrackerSimulator
from app.simulators.types import (
    BurstResult,
    ConnectionCounts,
    SimulatorError,
    TruthRow,
    UnknownAccount,
)
from app.simulators.walk import RandomWalk

__all__ = [
    "BitoproSimulator",
    "BurstResult",
    "ConnectionCounts",
    "DeltaDefiSimulator",
    "RandomWalk",
    "SfoxSimulator",
    "SimulatorError",
    "Simulators",
    "SolanaTrackerSimulator",
    "TruthRow",
    "UnknownAccount",
    "VenueSimulator",
    "run_simulate",
    "start_simulators",
]
