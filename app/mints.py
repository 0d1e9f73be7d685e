"""The Solana mints the service knows by address: one table for the venue parser, the
price graph, the simulator and the tests.

A token's symbol is chosen by whoever minted it, so "USDC" alone proves nothing: only
these exact addresses are trusted to be what their symbol says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

USDC: Final = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
USDT: Final = "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB"
WSOL: Final = "So11111111111111111111111111111111111111112"

KNOWN_MINTS: Final[Mapping[str, str]] = {USDC: "USDC", USDT: "USDT", WSOL: "wSOL"}
"""Symbols of the mints every Solana wallet is likely to hold, before any metadata arrives."""

STABLE_MINTS: Final[Mapping[str, str]] = {USDC: "USDC", USDT: "USDT"}
"""Mints that ARE a stablecoin (price graph identities)."""
