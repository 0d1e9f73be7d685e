"""The names every layer shares: the venues and an account's lifecycle states (SPEC §7).

Where it sits: at the bottom of the import graph, below :mod:`app.domain` (which uses
them in its values) and :mod:`app.prices.model` (whose market price sources are the
venues), so both take them from here and nothing spells them a second time.
"""

from __future__ import annotations

import enum


class Venue(enum.StrEnum):
    BITOPRO = "bitopro"
    SFOX = "sfox"
    DELTADEFI = "deltadefi"
    SOLANATRACKER = "solanatracker"


class AccountState(enum.StrEnum):
    """Lifecycle of one upstream account (SPEC §7)."""

    CONNECTING = "connecting"
    SYNCING = "syncing"
    LIVE = "live"
    STALE = "stale"
    AUTH_FAILED = "auth_failed"
    DISABLED = "disabled"
