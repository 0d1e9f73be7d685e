"""The ``balance-aggregator`` command: serve, demo, simulate, check-config, and the client
commands (balances, totals, accounts, prices, watch) registered from ``app/client``.

``serve`` is :func:`run_service`: one process serving ``create_app`` (:mod:`app.service`)
through :mod:`app.server`, or with ``workers`` > 1 the worker pool (:mod:`app.workers`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import orjson

from app.accounts import AccountConfig, ConfigError
from app.client.commands import add_client_commands
from app.settings import Settings, auto_workers, load_config


def cmd_check_config(_args: argparse.Namespace) -> int:
    settings, accounts = load_config()
    redis = "embedded (private redis-server under data_dir)"
    if settings.redis_url is not None:
        redis = "configured (BALAGG_REDIS_URL, **********)"
    out = {
        "host": settings.host,
        "port": settings.port,
        "redis": redis,
        "data_dir": str(settings.data_dir),
        "instance_id": settings.instance_id,
        "api_tokens": len(settings.api_tokens),
        "accounts": [a.masked() for a in accounts],
    }
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    enabled = sum(1 for a in accounts if a.enabled)
    sys.stdout.write(f"ok: {enabled} enabled account(s) of {len(accounts)}\n")
    return 0


def run_service(settings: Settings, accounts: Sequence[AccountConfig] | None = None) -> int:
    """Run until SIGINT/SIGTERM; return 0 after a clean shutdown.

    The data directory lock and the HTTP port are taken before anything starts; when
    either is taken by another process this returns 1 after one line on stderr.
    """
    # imported here: the client commands need none of the service
    from app.logs import SCRUBBER, setup_logging
    from app.redis_server import DirectoryInUse, DirectoryLock
    from app.server import bind_listener, serve_on
    from app.service import create_app, secrets_of

    setup_logging(settings.log_level, settings.log_format)
    if settings.workers > 1:
        from app.workers import run_workers

        resolved = list(accounts) if accounts is not None else settings.load_accounts()
        SCRUBBER.add(secrets_of(settings, resolved))
        return run_workers(settings, resolved)
    app = create_app(settings, accounts)
    lock: DirectoryLock | None = None
    try:
        if settings.redis_url is None:  # the embedded Redis lives in the data directory
            lock = DirectoryLock(settings.data_dir).acquire()
        listener = bind_listener(settings.host, settings.port)
    except DirectoryInUse as exc:
        sys.stderr.write(f"cannot start: {exc}\n")
        return 1
    except OSError as exc:
        if lock is not None:
            lock.release()
        reason = exc.strerror or type(exc).__name__
        sys.stderr.write(
            f"cannot start: cannot listen on {settings.host}:{settings.port}: {reason}\n"
        )
        return 1
    try:
        return serve_on(app, settings, [listener])
    finally:
        listener.close()
        if lock is not None:
            lock.release()


def cmd_serve(args: argparse.Namespace) -> int:
    settings, accounts = load_config()  # every problem at once, before anything starts
    if args.workers is not None:
        settings = settings.model_copy(update={"workers": args.workers})
    # the accounts just read and validated: reading 10,000 of them twice cost seconds
    return run_service(settings, accounts)


def _workers(value: str) -> int:
    """``--workers``: a count from 1 to 64, or ``auto`` (the CPU cores)."""
    if value.strip().lower() == "auto":
        return auto_workers()
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'auto': {value!r}") from None
    if not 1 <= count <= 64:
        raise argparse.ArgumentTypeError(f"must be from 1 to 64: {count}")
    return count


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    return run_demo(host=args.host, port=args.port, sim_port=args.sim_port)


def cmd_simulate(args: argparse.Namespace) -> int:
    from app.simulators.runner import run_simulate

    return run_simulate(host=args.host, port=args.port, walk=args.walk)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="balance-aggregator",
        description="Live, exact balances from BitoPro, sFOX, DeltaDeFi and SolanaTracker.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("serve", help="run the service from its settings (BALAGG_*)")
    p.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="worker processes on the one port: a number or 'auto' (= CPU cores); "
        "default BALAGG_WORKERS, else 1",
    )
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("demo", help="run the venue simulators and the service wired to them")
    p.add_argument("--host", help="service address (default BALAGG_HOST, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="service port (default BALAGG_PORT, else 8000)")
    p.add_argument("--sim-port", type=int, default=0, help="first simulator port (0 = free)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("simulate", help="run only the four venue simulators")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="first port (0 = free ports)")
    p.add_argument("--walk", action="store_true", help="random-walk the balances")
    p.set_defaults(func=cmd_simulate)
    p = sub.add_parser("check-config", help="validate settings and accounts; print them masked")
    p.set_defaults(func=cmd_check_config)
    # --- client commands: read a running service (app/client/commands.py) ---------------
    add_client_commands(sub)
    # --- end of client commands -----------------------------------------------------------
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        # One line per problem, all of them, so one run shows everything to fix.
        sys.stderr.write("".join(f"configuration error: {line}\n" for line in exc.problems))
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
