"""The service: ``create_app(settings)`` and its lifespan.

Where it sits: the ``serve`` command (:func:`app.cli.run_service`) and each worker of
the pool (:mod:`app.workers`) build the app here and serve it through
:mod:`app.server`. Nothing starts at import time or in ``create_app``. ``run_service``
first takes what only one process may hold — the data directory's lock (with the
embedded Redis) and the HTTP port — and fails with one line naming it if another
process has it, before any Redis or upstream socket
exists. The lifespan then builds the parts in dependency order, each given its
collaborators through its constructor — Redis (embedded unless ``BALAGG_REDIS_URL`` is
set), the lease manager, the batched writer with its lease fence, the price service, the
stream hub (one change-stream reader per process), then the upstream side (the
:class:`~app.supervisor.Supervisor`, or the ``upstream`` factory given to
``create_app``) — puts them on ``app.state.services`` as one
:class:`~app.services.Services`, starts them, and takes them down in reverse, flushing
pending writes before Redis goes away. The last stored prices are read before the
upstream side starts (served as stale until their feeds answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.types import Scope

from app.accounts import AccountConfig
from app.api.main import install_routes
from app.dashboard import install_dashboard
from app.disconnects import CancelOnDisconnect
from app.history.api import HISTORY_PREFIX
from app.history.runtime import History, start_history
from app.leases import Fence, LeaseManager
from app.logs import SCRUBBER
from app.metrics import Metrics
from app.prices.graph import PriceGraph
from app.prices.metrics import ValuationCollector
from app.prices.service import PriceService, price_graph
from app.redis_server import EmbeddedRedis
from app.services import Services, UpstreamFactory
from app.settings import Settings
from app.store import BalanceReader, BalanceWriter, FlushResult, Keys
from app.stream.fastwrite import KeepRawSend
from app.stream.hub import HubOptions, StreamHub
from app.supervisor import Supervisor
from app.upstream import AccountRunner

log = logging.getLogger(__name__)


def secrets_of(settings: Settings, accounts: Sequence[AccountConfig]) -> list[str]:
    values = [t.get_secret_value() for t in settings.api_tokens]
    if settings.redis_url is not None:
        values.append(settings.redis_url.get_secret_value())
    if settings.history_url is not None:
        values.append(settings.history_url.get_secret_value())
    for account in accounts:
        values.extend(account.secret_values())
    return values


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    if not host:
        return False  # uvicorn binds every interface for an empty host, like 0.0.0.0
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(
    settings: Settings,
    accounts: Sequence[AccountConfig] | None = None,
    *,
    upstream: UpstreamFactory | None = None,
) -> FastAPI:
    """Build the app. ``accounts`` defaults to the configured accounts file/inline list;
    ``upstream`` builds the upstream side (default: :class:`~app.supervisor.Supervisor`)."""
    resolved = list(accounts) if accounts is not None else settings.load_accounts()
    SCRUBBER.add(secrets_of(settings, resolved))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        embedded: EmbeddedRedis | None = None
        if settings.redis_url is None:
            embedded = EmbeddedRedis(settings.data_dir / "redis")
            await asyncio.to_thread(embedded.start)
            url = embedded.url
            log.info("started embedded redis (pid %s) on %s", embedded.pid, url)
        else:
            url = settings.redis_url.get_secret_value()
        client = aioredis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=10
        )
        metrics = Metrics()
        keys = Keys(settings.key_prefix)
        leases = LeaseManager(client, keys, settings.instance_id, settings.lease_ms)
        # the writer reports fenced accounts here; the upstream side steps down from them
        fenced: asyncio.Queue[str] = asyncio.Queue()
        # the hub comes before the writer: what each flush wrote is applied and fanned
        # out inside the writer's callback (no task switch, no read back)
        graph = price_graph(settings)
        reader = BalanceReader(client, keys)
        runners: dict[str, AccountRunner] = {}  # the accounts this process runs
        hub = build_hub(
            settings, resolved, client, reader, keys, metrics, graph, runners.__contains__
        )  # fmt: skip
        take_local = hub.take_local

        def on_flush(results: Sequence[FlushResult]) -> None:
            metrics.redis_up.set(1)
            for result in results:
                if result.changes:
                    metrics.balance_updates.labels(result.account).inc(result.changes)
                if result.fenced:
                    metrics.fenced_writes.labels(result.account).inc()
                    fenced.put_nowait(result.account)
            # own changes reach the stream's clients now, not after the hub reads them
            # back; whatever this misses, the stream read brings (nothing is lost)
            try:
                take_local(change for result in results for change in result.written)
            except Exception:  # the writer must go on whatever the fan-out met
                log.exception("applying own writes failed; the stream read brings them")

        def on_error(op: str, _exc: BaseException) -> None:
            metrics.redis_errors.labels(op).inc()
            metrics.redis_up.set(0)

        writer = BalanceWriter(
            client,
            keys,
            stream_maxlen=settings.stream_maxlen,
            fence=Fence(leases, [a.id for a in resolved if not a.enabled]),
            on_flush=on_flush,
            on_error=on_error,
        )

        def on_price_reject(feed: str, reason: str) -> None:
            metrics.price_feed_errors.labels(feed, reason).inc()

        # -- history (app/history): after Redis, stopped before it --------------------
        history: History | None = await start_history(
            settings, url, keys, [a.id for a in resolved], metrics
        )
        app.state.history = history
        # -- end history ----------------------------------------------------------------
        prices = PriceService(
            settings,
            graph,
            writer,
            client,
            keys,
            on_reject=on_price_reject,
            on_price=history.prices.offer if history is not None else None,
            on_announce=hub.publish_price,
        )
        metrics.registry.register(ValuationCollector(graph, hub.records))
        supervisor = (upstream or Supervisor)(
            settings=settings,
            accounts=resolved,
            redis=client,
            keys=keys,
            writer=writer,
            reader=reader,
            metrics=metrics,
            prices=prices,
            seq_seen=lambda: hub.seq,
            leases=leases,
            runners=runners,
            fenced=fenced,
        )
        app.state.services = Services(
            settings=settings,
            accounts=tuple(resolved),
            redis=client,
            keys=keys,
            writer=writer,
            reader=reader,
            metrics=metrics,
            prices=prices,
            hub=hub,
            supervisor=supervisor,
        )
        if not _is_loopback(settings.host) and not settings.api_tokens:
            log.warning(
                "listening on %s without BALAGG_API_TOKENS: anyone who can reach it can read "
                "every balance",
                settings.host,
            )
        writer.start()
        try:
            await prices.restore()
            await hub.start()
            await supervisor.start()
            log.info(
                "serving %d account(s) (%d enabled) as instance %s",
                len(resolved),
                sum(1 for a in resolved if a.enabled),
                settings.instance_id,
            )
            # What start-up built lives as long as the process: moved out of the
            # collector's generations (its garbage collected first), a full collection no
            # longer walks it in the middle of a request (40-80 ms on a 2-core machine:
            # docs/benchmarks.md, history `?at=`).
            gc.collect()
            gc.freeze()
            yield
        finally:
            log.info("shutting down")
            # Each step is bounded, so the whole shutdown fits an orchestrator's grace
            # period (SIGKILL follows at 30 s by default) even when one part hangs.
            await stop_within("supervisor", supervisor.stop(), 8)
            await stop_within("stream hub", hub.stop(), 4)
            if not await writer.drain(5):
                log.warning("shutdown: %d pending write(s) not flushed", writer.pending_keys())
            await stop_within("writer", writer.close(1), 2)
            if history is not None:  # history: stopped before Redis goes away
                await stop_within("history", history.stop(), 6)
            await stop_within("redis client", client.aclose(), 2)
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    app = FastAPI(
        title="balance-aggregator",
        version="0.1.0",
        summary="Live, exact balances across BitoPro, sFOX, DeltaDeFi and SolanaTracker",
        lifespan=lifespan,
        # /docs is served below from the package's own Swagger UI; ReDoc would need a CDN
        docs_url=None,
        redoc_url=None,
    )
    install_routes(app, settings)
    install_dashboard(app)
    install_docs(app)
    # a history query whose client has gone stops at once (app/disconnects.py)
    app.add_middleware(CancelOnDisconnect, watched=reads_history)
    # added last, so outermost: the stream route's batched writes need uvicorn's own send
    app.add_middleware(KeepRawSend)
    return app


def reads_history(scope: Scope) -> bool:
    """A request answered from the history database: a path under ``/v1/history`` or
    ``/v1/balances?at=`` (a past state)."""
    path: str = scope["path"]
    if path.startswith(HISTORY_PREFIX):
        return True
    query: bytes = scope.get("query_string", b"")
    return path == "/v1/balances" and any(p.startswith(b"at=") for p in query.split(b"&"))


async def stop_within(part: str, stopping: Awaitable[None], seconds: float) -> bool:
    """Await one part's stop for at most ``seconds``; False (and a warning) past that.

    A part that overruns is cancelled but not waited for: a stop that ignores its
    cancellation must not hold the rest of the shutdown (``asyncio.wait_for`` would).
    """
    task = asyncio.ensure_future(stopping)
    started = time.monotonic()
    done, _ = await asyncio.wait([task], timeout=seconds)
    if not done:
        task.cancel()
        log.warning("shutdown: %s did not stop within %.0f s; going on without it", part, seconds)
        return False
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("shutdown: %s failed to stop (%s)", part, type(exc).__name__)
        return False
    log.debug("shutdown: %s stopped in %.2f s", part, time.monotonic() - started)
    return True


def build_hub(
    settings: Settings,
    accounts: Sequence[AccountConfig],
    redis: aioredis.Redis,
    reader: BalanceReader,
    keys: Keys,
    metrics: Metrics,
    prices: PriceGraph,
    runs_here: Callable[[str], bool],
) -> StreamHub:
    """The stream hub, reading the change stream with the service's settings."""
    return StreamHub(
        redis=redis,
        reader=reader,
        keys=keys,
        accounts=accounts,
        options=HubOptions(
            instance_id=settings.instance_id,
            client_max_lag=settings.client_max_lag,
            client_buffer=settings.client_buffer,
            lease_ms=settings.lease_ms,
            private_redis=settings.redis_url is None,
            metrics_balances=settings.metrics_balances,
        ),
        metrics=metrics,
        prices=prices.prices,
        runs_here=runs_here,
    )


SWAGGER_ASSETS = "/static/swagger"
"""Where the vendored Swagger UI 5 lives (``app/static/swagger``, served with the
dashboard's public static files: the assets hold no data)."""


def install_docs(app: FastAPI) -> None:
    """``/docs`` from the package alone: it works without internet (no CDN), and like
    every route it needs a token when ``BALAGG_API_TOKENS`` is set."""
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API",
            oauth2_redirect_url=redirect_url,
            swagger_js_url=f"{SWAGGER_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_ASSETS}/favicon-32x32.png",
            # no badge that asks validator.swagger.io about the document
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
