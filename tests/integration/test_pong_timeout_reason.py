"""A link whose pong came too late is dropped as ``read_timeout``, never as ``closed``.

aiohttp closes the socket itself when a pong is overdue. When its pong timer runs while
no ``receive()`` is waiting (a busy event loop runs the timer before the runner resumes),
the next ``receive()`` only returns a closed socket, and the runner reported "connection
closed without a close frame (code 1006)", as if the venue had dropped the link. At
10,000 accounts with a 5 s heartbeat that made the service's own pong deadline look
like drops by the venue.
"""

from __future__ import annotations

import aiohttp

from app.reconnect import SocketOptions, http_session, open_socket
from app.simulators.runner import Simulators
from app.upstream import close_reason
from app.venues import make_session
from tests.integration.conftest import account_for, wait_until


async def test_a_pong_deadline_passed_outside_receive_is_a_read_timeout(
    sims: Simulators,
) -> None:
    account = account_for(sims, "bitopro")
    request = make_session(account).connect_request()
    async with http_session() as http:
        ws = await open_socket(http, request, SocketOptions(heartbeat=0.2))
        try:
            first = await ws.receive()  # the snapshot frame: the link works
            assert first.type is aiohttp.WSMsgType.TEXT
            sims.bitopro.stall(sims.default_keys["bitopro"])  # no more pongs
            # nothing waits in receive() while the heartbeat pings and its deadline passes

            async def closed_by_the_heartbeat() -> bool:
                return ws.closed

            assert await wait_until(closed_by_the_heartbeat)
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.CLOSED
            reason = close_reason(ws)
            assert reason.reason == "read_timeout", reason.detail
            assert "pong" in (reason.detail or "")
        finally:
            await ws.close()


async def test_a_socket_the_venue_closed_stays_closed(sims: Simulators) -> None:
    account = account_for(sims, "bitopro")
    request = make_session(account).connect_request()
    async with http_session() as http:
        ws = await open_socket(http, request, SocketOptions(heartbeat=5.0))
        try:
            assert (await ws.receive()).type is aiohttp.WSMsgType.TEXT
            sims.bitopro.drop(sims.default_keys["bitopro"])
            msg = await ws.receive()
            while msg.type is aiohttp.WSMsgType.TEXT:
                msg = await ws.receive()
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert close_reason(ws).reason == "closed"
        finally:
            await ws.close()
