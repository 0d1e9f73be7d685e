"""The HTTP/1.1 protocol uvicorn runs for the service: httptools with a capped request head.

Where it sits: below the ASGI app. uvicorn hands every TCP connection to this protocol,
which parses requests and starts the app (routing, :class:`~app.auth.RequestGuard`) once
a request's head is complete. httptools has no header limit of its own (uvicorn's
``h11_max_incomplete_event_size`` applies only to h11), so without a cap here a client
could make the server buffer an unfinished header of any size. This protocol:

- counts the bytes of each request head as they arrive and refuses it with 431 once it
  passes :data:`MAX_HEAD_BYTES` or :data:`MAX_HEADERS` headers, before any auth runs;
- answers its own refusals (431, and 400 for a request the parser rejects) with the API's
  JSON error shape instead of uvicorn's ``text/plain``;
- after a refusal, stops parsing, half-closes, and discards a bounded amount of further
  input so the client can read the answer before the connection closes.
"""

from __future__ import annotations

from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.auth import error_body

MAX_HEAD_BYTES = 64 * 1024
"""Request line plus headers, in bytes."""
MAX_HEADERS = 100
_DISCARD_MAX = 256 * 1024  # input read and dropped after a refusal, before closing
_LINGER_S = 2.0


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head-size cap and JSON refusals."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # between requests, or inside a head not yet complete
        self._head_bytes = 0
        self._header_count = 0
        self._too_large = False
        self._refused = False
        self._discarded = 0

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            self._too_large = True
            raise _HeadTooLarge  # httptools stops parsing and reports a callback error
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_open = True
        self._head_bytes = 0

    # -- input -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._discard(len(data))
            return
        if self._head_open and self._head_bytes + len(data) > MAX_HEAD_BYTES:
            # Parse only what still fits: the rest is not buffered by the parser at all.
            room = MAX_HEAD_BYTES - self._head_bytes
            self._feed(data[:room])
            if self._refused:
                return
            if self._head_open:  # the head did not end inside the allowed bytes
                self.refuse(431, "headers_too_large", _too_large_message())
                return
            rest = data[room:]
            self._head_bytes = 0
            self._feed(rest)
            return
        before = self._head_open
        self._feed(data)
        if before and self._head_open and not self._refused:
            self._head_bytes += len(data)

    def _feed(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if self._too_large:
                self.refuse(431, "headers_too_large", _too_large_message())
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.refuse(400, "bad_request", "the request is not valid HTTP/1.1")

    # -- refusals --------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        self.refuse(400, "bad_request", "the request is not valid HTTP/1.1")

    def refuse(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` with the JSON error shape, then close once it can be read."""
        if self._refused:
            return
        self._refused = True
        body = error_body(code, message)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        transport = self.transport
        transport.write(b"".join(head))
        if transport.can_write_eof():
            transport.write_eof()  # our side is done; keep reading so no reset eats the answer
            self.loop.call_later(_LINGER_S, transport.close)
        else:
            transport.close()

    def _discard(self, n: int) -> None:
        self._discarded += n
        if self._discarded > _DISCARD_MAX:
            self.transport.close()


class _HeadTooLarge(Exception):
    pass


def _too_large_message() -> str:
    return f"request headers are capped at {MAX_HEAD_BYTES} bytes and {MAX_HEADERS} fields"
