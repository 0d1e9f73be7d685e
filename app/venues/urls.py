"""Venue URLs and what may be shown of them: building request URLs, redacting secrets.

Venue requests carry credentials in URLs (SolanaTracker's key in the path, DeltaDeFi's in
the query) and operators may write a password or key into a URL override. Every
:class:`~app.venues.base.HttpRequest` therefore carries a ``log_url`` built here with the
secrets replaced by :data:`REDACTED`; only that one is ever logged. A venue's own error
text, which may echo a credential back, goes through :func:`scrub` before it is shown.

Used by the venue sessions (:mod:`app.venues`) and the price feeds (:mod:`app.prices`)
when they build requests; nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit, urlunsplit

REDACTED: Final = "***"
_SECRET_PARAM = re.compile(r"key|token|secret|sig|pass|auth", re.IGNORECASE)


def quote_segment(value: str) -> str:
    """``value`` quoted for one URL path segment or query value (``/`` included)."""
    return quote(value, safe="")


def with_query_param(url: str, name: str, quoted_value: str) -> str:
    """``url`` with ``name=value`` appended to its query (``?`` or ``&`` as needed)."""
    base, hash_, fragment = url.partition("#")
    if "?" not in base:
        sep = "?"
    elif base.endswith(("?", "&")):
        sep = ""
    else:
        sep = "&"
    return f"{base}{sep}{name}={quoted_value}{hash_}{fragment}"


def with_path_segment(url: str, quoted_segment: str) -> str:
    """``url`` with one more path segment (the query, if any, stays after it)."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/") + "/" + quoted_segment
    return urlunsplit(parts._replace(path=path))


def redact_url(url: str) -> str:
    """Hide what an operator may have written into a URL override: passwords, keys."""
    parts: SplitResult = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(k) for k, _ in pairs):
            query = urlencode(
                [(k, REDACTED if _SECRET_PARAM.search(k) else v) for k, v in pairs],
                safe="*",
            )
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def scrub(message: str, secrets: Iterable[str], *, max_len: int = 120) -> str:
    """A venue's own error text, shortened, with any of our secrets blanked out."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, REDACTED)
    message = "".join(c if c.isprintable() else " " for c in message[: max_len * 2])
    return message[:max_len]
