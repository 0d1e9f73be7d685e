"""Logging set-up: text or one JSON object per line, with every configured secret scrubbed.

Venue code never logs a secret on purpose (URLs are logged in their redacted form), but a
library message or an exception text could still carry one; the :class:`SecretScrubber`
filter replaces every known secret value in the final line as a last line of defence.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable

import orjson

_SHORTEST = 6
"""Secrets shorter than this are not scrubbed: they would mangle ordinary words, and real
credentials are longer. It is also the width of the window that finds candidates."""


class SecretScrubber(logging.Filter):
    """Replaces every registered secret in a record's message and exception text.

    A line is read once, window by window, whatever the number of secrets: 10,000
    accounts register 30,000 of them, and searching every line once per secret blocked
    the event loop on every dropped connection. ``_heads`` maps the first ``_SHORTEST``
    characters of the secrets to the lengths of the secrets starting with them, so a
    window that starts no secret costs one dict lookup and one that does costs one set
    lookup per distinct length (secrets sharing a prefix, such as the emails of many
    accounts, are not compared one by one).
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._heads: dict[str, set[int]] = {}

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            if len(secret) >= _SHORTEST:
                self._secrets.add(secret)
                self._heads.setdefault(secret[:_SHORTEST], set()).add(len(secret))

    def scrub(self, text: str) -> str:
        heads, secrets = self._heads, self._secrets
        width = _SHORTEST
        if not heads or len(text) < width:
            return text
        found: set[str] = set()
        get = heads.get
        for i in range(len(text) - width + 1):
            lengths = get(text[i : i + width])
            if lengths is not None:
                for n in lengths:
                    candidate = text[i : i + n]
                    if candidate in secrets:
                        found.add(candidate)
        # longest first, so a secret inside a longer one never leaves the rest showing
        for secret in sorted(found, key=lambda s: (-len(s), s)):
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            record.msg = self.scrub(record.getMessage())
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("account", "venue"):
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        return orjson.dumps(doc).decode()


SCRUBBER = SecretScrubber()


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(SCRUBBER)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("aiohttp.access", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
