"""The venue registry and the session interface defaults the connection loop relies on."""

from __future__ import annotations

import pytest

from app.domain import Venue
from app.venues import SESSION_TYPES, make_session
from app.venues.base import HttpRequest
from app.venues.bitopro import BitoproSession
from app.venues.deltadefi import DeltadefiSession
from app.venues.sfox import SfoxSession
from app.venues.solanatracker import SolanatrackerSession
from tests.venues.conftest import CANARIES, CANARY_DATA_KEY, account


@pytest.mark.parametrize(
    ("venue", "kind", "seed"),
    [
        ("bitopro", BitoproSession, False),
        ("sfox", SfoxSession, True),
        ("deltadefi", DeltadefiSession, True),
        ("solanatracker", SolanatrackerSession, False),
    ],
)
def test_make_session(venue: str, kind: type, seed: bool) -> None:
    session = make_session(account(venue))
    assert type(session) is kind
    assert session.venue == Venue(venue)
    assert len(session.seed_requests()) == (1 if seed else 0)
    for canary in CANARIES:
        assert canary not in repr(session)


def test_every_venue_is_registered() -> None:
    assert set(SESSION_TYPES) == {v.value for v in Venue}


def test_solanatracker_seeds_only_with_a_data_key() -> None:
    assert make_session(account("solanatracker", data_api_key=CANARY_DATA_KEY)).seed_requests()


def test_http_request_repr_shows_only_the_log_url() -> None:
    request = HttpRequest("GET", "wss://h/SECRETSECRET", "wss://h/***", {"k": "SECRETSECRET"})
    assert "SECRETSECRET" not in repr(request)
    assert request.wallet is None
