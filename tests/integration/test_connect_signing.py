"""A connection is signed when its socket opens, not before it waits for a handshake slot.

BitoPro accepts a nonce only within 30 s of its clock and only above the last nonce it
accepted for the key (VENUES.md). With thousands of accounts starting, an account can
wait a long time for one of the process's handshake slots (``VenueLimiter.handshake``);
a request signed before that wait reached the venue with a nonce that was too old, or
below one the key had used since, was refused with HTTP 401, and thousands of accounts
of a 10,000-account start ended in ``auth_failed``.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from app.ratelimit import MAX_HANDSHAKES
from app.simulators.bitopro import REST_PATH, auth_headers
from app.simulators.runner import Simulators
from tests.integration.conftest import (
    account_for,
    fast_settings,
    metric,
    running_service,
    supervisor_of,
    wait_state,
    wait_until,
)


async def test_the_nonce_is_signed_after_the_wait_for_a_handshake_slot(
    sims: Simulators, redis_url: str, key_prefix: str
) -> None:
    account = account_for(sims, "bitopro")
    key = sims.default_keys["bitopro"]
    creds = sims.bitopro.credentials(key)
    async with running_service(fast_settings(redis_url, key_prefix), [account]) as rt:
        await wait_state(rt, account.id, ["live"])
        runner = rt.supervisor.runner(account.id)
        assert runner is not None
        refused_before = sims.bitopro.connection_counts(key).refused

        # every handshake slot of the process is taken: the next connection waits
        slots = supervisor_of(rt).limiter.handshake()
        for _ in range(MAX_HANDSHAKES):
            await slots.acquire()
        held = MAX_HANDSHAKES
        try:
            attempts = runner.attempts
            await rt.supervisor.resync(account.id)

            async def waiting_for_a_slot() -> bool:
                return runner.attempts > attempts

            assert await wait_until(waiting_for_a_slot)
            # meanwhile the key signs another request (its REST snapshot, another client
            # of the same key): the venue's last accepted nonce moves past anything
            # signed before this moment
            nonce = time.time_ns() // 1_000_000 + 5
            headers = auth_headers(creds["api_key"], creds["api_secret"], creds["email"], nonce)
            async with (
                aiohttp.ClientSession() as http,
                http.get(sims.bitopro.rest_url + REST_PATH, headers=headers) as r,
            ):
                assert r.status == 200
            # a connection signed from here on signs a higher nonce
            await asyncio.sleep(max(0.0, (nonce + 2) / 1000 - time.time()))
            for _ in range(held):
                slots.release()
            held = 0

            await wait_state(rt, account.id, ["live"])
        finally:
            for _ in range(held):
                slots.release()
        # the reconnect's signature was made after the wait: accepted the first time
        assert sims.bitopro.connection_counts(key).refused == refused_before
        labels = {"account": account.id, "venue": "bitopro", "reason": "auth"}
        assert metric(rt, "balagg_upstream_errors_total", labels) == 0
