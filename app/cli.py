"""The ``balance-aggregator`` command: serve, demo, simulate, check-config, and the client
commands (balances, totals, accounts, prices, watch) registered from ``app/client``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import orjson

from app.accounts import ConfigError
from app.client.commands import add_client_commands
from app.settings import auto_workers, load_config


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


def cmd_serve(args: argparse.Namespace) -> int:
    from app.service import run_service

    settings, _accounts = load_config()  # every problem at once, before anything starts
    if args.workers is not None:
        settings = settings.model_copy(update={"workers": args.workers})
    return run_service(settings)


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
