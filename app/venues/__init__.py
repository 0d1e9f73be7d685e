"""The venue protocol layer: one pure :class:`~app.venues.base.VenueSession` per venue.

:func:`make_session` builds the right session for an account; the connection loop makes a
new one for every (re)connect, so per-connection protocol state always starts fresh.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from app.accounts import AccountConfig
from app.domain import Venue
from app.venues.base import VenueSession
from app.venues.bitopro import BitoproSession
from app.venues.deltadefi import DeltadefiSession
from app.venues.sfox import SfoxSession
from app.venues.solanatracker import SolanatrackerSession

SESSION_TYPES: Final[Mapping[str, Callable[[AccountConfig], VenueSession]]] = {
    Venue.BITOPRO: BitoproSession,
    Venue.SFOX: SfoxSession,
    Venue.DELTADEFI: DeltadefiSession,
    Venue.SOLANATRACKER: SolanatrackerSession,
}


def make_session(account: AccountConfig) -> VenueSession:
    """A fresh protocol session for one connection of ``account``."""
    try:
        factory = SESSION_TYPES[account.venue]
    except KeyError:
        raise ValueError(f"account {account.id}: unknown venue {account.venue!r}") from None
    return factory(account)


__all__ = [
    "SESSION_TYPES",
    "BitoproSession",
    "DeltadefiSession",
    "SfoxSession",
    "SolanatrackerSession",
    "VenueSession",
    "make_session",
]
