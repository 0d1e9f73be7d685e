"""The simulator process of the bench: ``python -m bench.simhost``.

It runs the venue simulators (:func:`app.simulators.runner.start_simulators`) with their
usual ``/_sim`` control API, plus a small ``/bench`` API on a second port that needs the
in-process Python API of the simulators:

    POST /bench/accounts  {"accounts": [bitopro account body, ...]}  -> {"keys"}
    POST /bench/fire      {"keys", "count", "asset"}  one prepared burst per key, written
                          together; -> {"t0", "t1", "frames", "totals"} (times are
                          ``time.monotonic()``; totals: each key's final asset total)
    POST /bench/pace      {"key", "asset", "rate", "seconds", "start"}  one frame per push,
                          paced; frame k carries amount ``start + k * 1e-8``;
                          -> {"sent": [[k, t_send], ...]}
    GET  /bench/conns                            -> {"open": n} connections open and ready

Times are ``time.monotonic()``, which on Linux is one clock for every process on the
machine, so the bench process can compare them with its own receive times.

Prints ``{"bitopro": {"ws_url", "rest_url"}, "bench_url"}`` as the first stdout line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from decimal import Decimal
from typing import Any

from aiohttp import web

from app.simulators.bitopro import BitoproSimulator
from app.simulators.connection import Connection
from app.simulators.runner import start_simulators
from app.simulators.server import BurstPlan

_HIGH_WATER = 1 << 20
_UNIT = Decimal("0.00000001")


async def _write(conn: Connection, chunks: list[bytes]) -> int:
    transport = conn.request.transport
    if transport is None:
        return 0
    protocol: Any = conn.request.protocol
    async with conn.lock:
        for chunk in chunks:
            if transport.is_closing():
                return 0
            transport.write(chunk)
            if transport.get_write_buffer_size() > _HIGH_WATER:
                await protocol._drain_helper()
    return 1


def build_bench_app(sim: BitoproSimulator) -> web.Application:
    async def accounts(request: web.Request) -> web.Response:
        body = await request.json()
        keys = [sim.add_account_json(a) for a in body["accounts"]]
        return web.json_response({"keys": keys})

    async def fire(request: web.Request) -> web.Response:
        body = await request.json()
        count = int(body["count"])
        asset = str(body.get("asset") or "BTC")
        plans: list[BurstPlan] = [sim.prepare_burst(k, count, asset) for k in body["keys"]]
        jobs = []
        for plan in plans:
            plan.commit()
            for conn in plan.targets:
                jobs.append(_write(conn, plan.chunks_for(conn)))
        # the truth once the burst is folded, so the bench asks nothing while it runs
        totals = {
            key: str(row.total)
            for key in body["keys"]
            for row in sim.truth(key)
            if row.wallet == "" and row.asset == asset.upper()
        }
        t0 = time.monotonic()
        done = await asyncio.gather(*jobs)
        t1 = time.monotonic()
        return web.json_response(
            {"t0": t0, "t1": t1, "frames": sum(done) * count, "totals": totals}
        )

    async def pace(request: web.Request) -> web.Response:
        body = await request.json()
        key, asset = str(body["key"]), str(body["asset"])
        rate, seconds = float(body["rate"]), float(body["seconds"])
        k = int(body.get("start", 1))
        total = int(rate * seconds)
        sent: list[tuple[int, float]] = []
        began = time.monotonic()
        done = 0
        while done < total:
            due = min(total, int((time.monotonic() - began) * rate) + 1)
            while done < due:
                amount = format(k * _UNIT, "f")
                t = time.monotonic()
                await sim.push(key, {asset: amount})
                sent.append((k, t))
                k += 1
                done += 1
            await asyncio.sleep(0.0005)
        return web.json_response({"sent": sent})

    async def conns(_request: web.Request) -> web.Response:
        counts = sim.all_connection_counts()
        return web.json_response({"open": sum(c.open for c in counts.values())})

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/bench/accounts", accounts)
    app.router.add_post("/bench/fire", fire)
    app.router.add_post("/bench/pace", pace)
    app.router.add_get("/bench/conns", conns)
    return app


async def _main(port: int, bench_port: int, ping: float) -> None:
    sims = await start_simulators("127.0.0.1", port, default_accounts=False, ping_interval=ping)
    runner = web.AppRunner(build_bench_app(sims.bitopro), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", bench_port, backlog=4096)
    await site.start()
    sys.stdout.write(
        json.dumps(
            {
                "bitopro": {"ws_url": sims.bitopro.ws_url, "rest_url": sims.bitopro.rest_url},
                "bench_url": f"http://127.0.0.1:{bench_port}",
            }
        )
        + "\n"
    )
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
        await sims.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.simhost")
    parser.add_argument("--port", type=int, required=True, help="first simulator port")
    parser.add_argument("--bench-port", type=int, required=True)
    parser.add_argument("--ping", type=float, default=20.0, help="simulator ping interval (s)")
    args = parser.parse_args()
    import uvloop

    uvloop.run(_main(args.port, args.bench_port, args.ping))


if __name__ == "__main__":
    main()
