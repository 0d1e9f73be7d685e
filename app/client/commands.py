"""The client subcommands of ``balance-aggregator``: balances, totals, accounts, prices, watch.

``add_client_commands`` registers them on the CLI's subparsers (``app/cli.py``); each
command builds a :class:`ServiceClient` from ``--url``/``--token`` (defaults from
``BALAGG_HOST``/``BALAGG_PORT`` and ``BALAGG_API_TOKEN``), reads the service, and renders
a table on a terminal or machine output (JSON by default when piped, ``--json``,
``--csv``). A :class:`ClientError` becomes one line on stderr and its exit code; no
traceback, and the token is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO
from urllib.parse import quote as url_quote

import aiohttp
from rich.console import Console
from rich.text import Text

from app.client import render
from app.client.connection import (
    DEFAULT_TIMEOUT,
    Answer,
    BadRequest,
    ClientError,
    NotFound,
    ServiceClient,
    Token,
    check_url,
    default_token,
    default_url,
)
from app.client.watch import Position, StreamFollower, stderr_report, watch_json, watch_table

_ACCOUNT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_QUOTE_RE = re.compile(r"^[A-Za-z]{2,10}$")
STATUS_LINES_KEPT = 20

COMMON_EPILOG = """
connection:
  --url defaults to http://$BALAGG_HOST:$BALAGG_PORT (127.0.0.1:8000); the token to
  $BALAGG_API_TOKEN. The token is sent as an Authorization header and never printed.

output:
  a table on a terminal; piped, JSON (the service's own document). --json, --csv and
  --table choose explicitly. Amounts are the service's exact decimal strings.

exit codes: 0 ok, 1 service unreachable or unexpected answer, 2 invalid request,
  3 token refused, 4 unknown account or route not served
"""

EXAMPLES = {
    "balances": """examples:
  balance-aggregator balances
  balance-aggregator balances --account bitopro-main --nonzero
  balance-aggregator balances --asset BTC,ETH --quote USD
  balance-aggregator balances --csv > balances.csv
  balance-aggregator balances --json | jq '.balances[] | select(.stale)'
""",
    "totals": """examples:
  balance-aggregator totals
  balance-aggregator totals --quote USD --csv
""",
    "accounts": """examples:
  balance-aggregator accounts
  balance-aggregator accounts --json | jq -r '.accounts[] | "\\(.account) \\(.state)"'
""",
    "prices": """examples:
  balance-aggregator prices
  balance-aggregator prices --csv
""",
    "watch": """examples:
  balance-aggregator watch
  balance-aggregator watch --account sfox-main --asset BTC --nonzero
  balance-aggregator watch --json >> changes.jsonl        # one message per line
  balance-aggregator watch --json --since 812              # resume a script's tail

The table follows /v1/stream: a snapshot, then every change (a changed amount is
highlighted briefly). When the service restarts, watch reconnects and resumes with
since=<last seq>, so nothing is missed or repeated; the status line says so. Ctrl-C
stops it (exit 0) and prints the last seq on stderr.
""",
}


# --- arguments ----------------------------------------------------------------------------


def _names(values: Sequence[str] | None) -> list[str]:
    """``--account a,b --account c`` → ``[a, b, c]``."""
    return [item.strip() for value in values or () for item in value.split(",") if item.strip()]


def _quote_arg(value: str) -> str:
    if not _QUOTE_RE.match(value):
        raise argparse.ArgumentTypeError(f"not a currency code: {value!r}")
    return value.upper()


def _common_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("service")
    group.add_argument(
        "--url", default=None, help="service base URL (default: from BALAGG_HOST/BALAGG_PORT)"
    )
    # default=None: the environment's token is read at run time so --help never shows it
    group.add_argument(
        "--token", default=None, metavar="TOKEN", help="bearer token (default: $BALAGG_API_TOKEN)"
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"per request (default {DEFAULT_TIMEOUT:g})",
    )
    out = parent.add_argument_group("output").add_mutually_exclusive_group()
    out.add_argument(
        "--json",
        dest="output",
        action="store_const",
        const="json",
        help="the service's JSON document (watch: one message per line)",
    )
    out.add_argument(
        "--csv",
        dest="output",
        action="store_const",
        const="csv",
        help="CSV with exact decimal strings",
    )
    out.add_argument(
        "--table",
        dest="output",
        action="store_const",
        const="table",
        help="a table even when piped (no colour)",
    )
    return parent


def _filters(parser: argparse.ArgumentParser, *, assets: bool = True) -> None:
    parser.add_argument(
        "--account",
        action="append",
        metavar="ACCOUNT",
        help="only this account (repeat or comma-separate for several)",
    )
    if assets:
        parser.add_argument(
            "--asset",
            action="append",
            metavar="ASSET",
            help="only this asset code or mint (repeat or comma-separate)",
        )


def add_client_commands(sub: Any) -> None:
    """Register the client subcommands on the CLI's subparsers object."""
    parent = _common_parent()

    def add(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> Any:
        parser = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[parent],
            epilog=EXAMPLES[name] + COMMON_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(func=func)
        return parser

    p = add("balances", "read the current balances of a running service", cmd_balances)
    _filters(p)
    p.add_argument("--nonzero", action="store_true", help="hide balances that are all zero")
    p.add_argument(
        "--quote",
        type=_quote_arg,
        default=None,
        metavar="CCY",
        help="value each balance in this currency when the service can",
    )
    p = add("totals", "exact totals per symbol across accounts, valued", cmd_totals)
    _filters(p, assets=False)
    p.add_argument(
        "--quote",
        type=_quote_arg,
        default="USD",
        metavar="CCY",
        help="valuation currency (default USD)",
    )
    add("accounts", "the state of every configured account", cmd_accounts)
    add("prices", "every price the service knows (needs live valuation)", cmd_prices)
    p = add("watch", "a live table that follows the service's change stream", cmd_watch)
    _filters(p)
    p.add_argument(
        "--nonzero", action="store_true", help="hide balances that are all zero (table only)"
    )
    p.add_argument(
        "--since",
        type=int,
        default=None,
        metavar="SEQ",
        help="resume after this seq instead of starting from a snapshot",
    )


# --- running a command --------------------------------------------------------------------


def _token(args: argparse.Namespace) -> Token | None:
    if args.token:
        return Token(str(args.token))
    return default_token()


def _mode(args: argparse.Namespace, out: TextIO) -> str:
    if args.output:
        return str(args.output)
    return "table" if out.isatty() else "json"


def _console(out: TextIO) -> Console:
    return Console(file=out, highlight=False, soft_wrap=False)


def _fail(exc: ClientError, token: Token | None) -> int:
    message = token.scrub(exc.message) if token is not None else exc.message
    sys.stderr.write(f"error: {message}\n")
    return exc.exit_code


def _quiet_broken_pipe() -> int:
    # the reader (head, less) went away: stop writing, and keep the interpreter from
    # complaining about the unflushable stdout at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0


def _run(args: argparse.Namespace, body: Callable[[ServiceClient], Awaitable[int]]) -> int:
    token = _token(args)
    try:
        base = check_url(args.url or default_url())
        if args.timeout <= 0:
            raise BadRequest("--timeout must be positive")

        async def main() -> int:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=args.timeout)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                return await body(ServiceClient(session, base, token, args.timeout))

        return asyncio.run(main())
    except ClientError as exc:
        return _fail(exc, token)
    except BrokenPipeError:
        return _quiet_broken_pipe()


async def _check_accounts(client: ServiceClient, names: Sequence[str]) -> None:
    """Every named account is configured, else :class:`NotFound` naming it."""
    for name in names:
        if not _ACCOUNT_RE.match(name):
            raise BadRequest(f"{name!r} is not a valid account id")
    doc = (await client.get("/v1/accounts")).doc
    known = [str(a.get("account")) for a in doc.get("accounts") or []]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise NotFound(
            f"unknown account: {', '.join(unknown)} (configured: {', '.join(known) or 'none'})"
        )


def _emit(
    answer: Answer,
    mode: str,
    out: TextIO,
    table: Callable[[Console], None],
    csv_text: Callable[[], str],
) -> int:
    if mode == "json":
        text = answer.body.decode()
        out.write(text if text.endswith("\n") else text + "\n")
    elif mode == "csv":
        out.write(csv_text())
    else:
        table(_console(out))
    out.flush()
    return 0


def cmd_balances(args: argparse.Namespace) -> int:
    out = sys.stdout

    async def body(client: ServiceClient) -> int:
        accounts, assets = _names(args.account), _names(args.asset)
        params: dict[str, str] = {}
        if assets:
            params["asset"] = ",".join(assets)
        if args.nonzero:
            params["nonzero"] = "true"
        if args.quote:
            params["quote"] = args.quote
        path = "/v1/balances"
        if len(accounts) == 1:
            # the per-account route answers 404 for an account the service does not know
            path = f"/v1/balances/{url_quote(accounts[0], safe='')}"
        elif accounts:
            await _check_accounts(client, accounts)
            params["account"] = ",".join(accounts)
        answer = await client.get(path, params)
        records = answer.doc.get("balances") or []

        def table(console: Console) -> None:
            console.print(render.balances_table(records, quote=args.quote))
            console.print(render.balances_footer(answer.doc, args.quote))

        return _emit(
            answer,
            _mode(args, out),
            out,
            table,
            lambda: render.to_csv(records, render.BALANCE_COLUMNS),
        )

    return _run(args, body)


def cmd_totals(args: argparse.Namespace) -> int:
    out = sys.stdout

    async def body(client: ServiceClient) -> int:
        accounts = _names(args.account)
        params = {"quote": args.quote}
        if accounts:
            await _check_accounts(client, accounts)
            params["account"] = ",".join(accounts)
        answer = await client.get("/v1/totals", params)
        totals = answer.doc.get("totals") or []
        return _emit(
            answer,
            _mode(args, out),
            out,
            lambda console: console.print(render.totals_table(answer.doc, args.quote)),
            lambda: render.to_csv(totals, render.TOTAL_COLUMNS),
        )

    return _run(args, body)


def cmd_accounts(args: argparse.Namespace) -> int:
    out = sys.stdout

    async def body(client: ServiceClient) -> int:
        answer = await client.get("/v1/accounts")
        accounts = answer.doc.get("accounts") or []
        return _emit(
            answer,
            _mode(args, out),
            out,
            lambda console: console.print(render.accounts_table(answer.doc)),
            lambda: render.to_csv(accounts, render.ACCOUNT_COLUMNS),
        )

    return _run(args, body)


def cmd_prices(args: argparse.Namespace) -> int:
    out = sys.stdout

    async def body(client: ServiceClient) -> int:
        try:
            answer = await client.get("/v1/prices")
        except NotFound:
            raise NotFound(
                f"{client.base_url} does not serve /v1/prices: this service has no live "
                "valuation yet (totals still values what it can)"
            ) from None
        rows = render.price_rows(answer.doc)

        def table(console: Console) -> None:
            console.print(render.generic_table(rows))
            console.print(Text(f"{len(rows)} prices", style="dim"))

        return _emit(
            answer,
            _mode(args, out),
            out,
            table,
            lambda: render.to_csv(rows, ("pair", "base", "quote", "price")),
        )

    return _run(args, body)


def cmd_watch(args: argparse.Namespace) -> int:
    out = sys.stdout
    position = Position(args.since)
    token = _token(args)

    async def body(client: ServiceClient) -> int:
        accounts, assets = _names(args.account), _names(args.asset)
        if accounts:
            await _check_accounts(client, accounts)
        else:
            await client.get("/v1/accounts")  # reachable, and the token is accepted
        params: dict[str, str] = {}
        if accounts:
            params["accounts"] = ",".join(accounts)
        if assets:
            params["assets"] = ",".join(assets)
        mode = _mode(args, out)
        if mode == "csv":
            raise BadRequest("watch prints a table or --json lines; --csv is not supported")
        if mode == "json" and args.nonzero:
            # a tail carries every change, a balance going to zero included
            raise BadRequest("watch --json prints every message; --nonzero is for the table")
        if mode == "json":
            follower = StreamFollower(client, params, position, stderr_report())
            return await watch_json(follower, out)
        status: list[str] = []

        def report(line: str) -> None:
            status.append(line)
            del status[:-STATUS_LINES_KEPT]

        follower = StreamFollower(client, params, position, report)
        return await watch_table(follower, _console(out), nonzero=args.nonzero, status=status)

    try:
        return _run(args, body)
    except KeyboardInterrupt:
        if position.seq is not None:
            sys.stderr.write(
                f"watch: stopped after seq {position.seq} (resume with --since {position.seq})\n"
            )
        return 0
    finally:
        del token
