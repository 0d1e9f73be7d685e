"""One ``/v1/stream`` client: its filter, its bounded conflating queue and its sender.

Where it sits: after each batch of changes the hub :meth:`~Subscriber.offer` s every
client its matching :class:`~app.stream.messages.Message` s. A client on uvicorn's
connection (see :mod:`app.stream.fastwrite`) with nothing queued whose transport takes
more now is written to at once, from the hub's own loop: no task wakes, and on a
connection without extensions the hub's frames, built once per message, are written as
they are. Anything else is queued (without waiting) for the subscriber's sender task,
which writes once the transport drains; the two never overlap, since a direct write
happens only while nothing is queued and no send is under way. It gets what it reports
to as callbacks (conflated and sent counts, event lag), never the hub itself.

The queue keeps every message while it holds at most ``limit``; past that it switches to
conflation, keeping only the newest message per key (events and control frames are never
dropped), and stays conflating until it drains. A replaced message is removed and its
successor appended, so the queue stays in ``seq`` order and the last ``seq`` a client
received is always a correct resume point. So a client that cannot keep up costs memory
bounded by the number of keys, not by the update rate. Per-client replies (pong, errors)
are never conflated; ``controls`` counts them so the hub can bound them.

``stalled`` counts messages queued since the socket last accepted one: the hub closes a
client whose count passes ``client_max_lag`` with 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from app.stream.fastwrite import DirectWriter, direct_writer
from app.stream.messages import Key, Message

log = logging.getLogger(__name__)

_DIRECT_BATCH = 512  # messages framed per direct write
_CLOSE_WAIT = 3.0


class ClientSocket(Protocol):
    """What a sender needs from a downstream connection (a Starlette ``WebSocket`` fits)."""

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


def _ignore(_n: float) -> None:
    return None


class Subscriber:
    """One client's filter, queue and sender (see the module docstring).

    ``on_conflated(n)`` is told of every ``n`` messages replaced by newer ones,
    ``on_sent(n)`` of every ``n`` sent, ``observe_lag(seconds)`` of each change's time
    from upstream receive to send.
    """

    def __init__(
        self,
        accounts: frozenset[str] | None,
        assets: frozenset[str] | None,
        limit: int,
        *,
        on_conflated: Callable[[int], None] = _ignore,
        on_sent: Callable[[int], None] = _ignore,
        observe_lag: Callable[[float], None] = _ignore,
    ) -> None:
        self.accounts = accounts
        self.assets = assets
        self.limit = limit
        self.prices = False  # opted in to ``price`` messages (``prices=true``)
        self._on_conflated = on_conflated
        self._on_sent = on_sent
        self._observe_lag = observe_lag
        self._queue: OrderedDict[object, Message] = OrderedDict()
        self._conflating = False
        self._allowance = 0  # extra room a resume replay may use without being conflated
        self.controls = 0  # per-client replies (pong, error) waiting: bounded by ``limit``
        self._serial = 0
        self._wake = asyncio.Event()
        self.close_code: int | None = None
        self.holding = False  # a replay is being read from Redis: do not send yet
        self.epoch = 0  # bumped whenever a fresh snapshot supersedes the queue
        self.stalled = 0  # messages queued since the socket last accepted one
        self.conflated = 0
        self.sent = 0
        self.peak_pending = 0
        self.direct = False  # the sender writes to the server's connection in batches
        self.closed = asyncio.Event()
        self._socket: ClientSocket | None = None
        self._direct: DirectWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._in_send = False
        self._closer: asyncio.Task[None] | None = None

    # -- filter ------------------------------------------------------------------------

    def matches(self, msg: Message) -> bool:
        if self.accounts is not None and msg.account not in self.accounts:
            return False
        if self.assets is not None and msg.key is not None and msg.key[2]:
            return msg.asset in self.assets
        return True

    # -- queue -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._queue)

    def push(self, msg: Message) -> None:
        queue = self._queue
        if self._conflating and msg.key is not None:
            if queue.pop(msg.key, None) is not None:
                self.conflated += 1
                self._on_conflated(1)
            queue[msg.key] = msg
        else:
            self._serial += 1
            queue[self._serial] = msg
            if msg.control:
                self.controls += 1
            if not self._conflating and len(queue) > self.limit + self._allowance:
                self._conflate()
        self.stalled += 1
        if len(queue) > self.peak_pending:
            self.peak_pending = len(queue)
        self._wake.set()

    def _conflate(self) -> None:
        """Keep the newest message per key, in order; from now on conflate on arrival."""
        newest: set[Key] = set()
        kept: list[tuple[object, Message]] = []
        for slot, msg in reversed(self._queue.items()):
            if msg.key is None:
                kept.append((slot, msg))
            elif msg.key not in newest:
                newest.add(msg.key)
                kept.append((msg.key, msg))
        dropped = len(self._queue) - len(kept)
        self._queue = OrderedDict(reversed(kept))
        self._conflating = True
        if dropped:
            self.conflated += dropped
            self._on_conflated(dropped)

    def clear(self) -> None:
        self._queue.clear()
        self.controls = 0
        self._conflating = False
        self._allowance = 0
        self.stalled = 0

    def prepend(self, messages: Sequence[Message]) -> None:
        """Put a replay before what arrived live while it was being read.

        A replay is delivered exactly (each missed message once), so it gets room of its
        own on top of ``limit``; it is bounded by ``client_max_lag``, which decides
        whether a client may resume at all.
        """
        live = list(self._queue.values())
        self.clear()
        self._allowance = len(messages)
        for msg in (*messages, *live):
            self.push(msg)
        self.stalled = 0

    def pop(self) -> Message | None:
        """The oldest queued message, or None."""
        if not self._queue:
            return None
        _slot, msg = self._queue.popitem(last=False)
        if msg.control:
            self.controls -= 1
        if self._allowance:
            self._allowance -= 1
        if not self._queue:
            self._conflating = False
        return msg

    def offer(self, messages: Sequence[Message], frames: bytes | None = None) -> None:
        """The hub's batch for this client (already filtered), in ``seq`` order: written
        at once when the connection takes it now, else queued for the sender.

        ``frames``: the text frames of exactly ``messages``, joined, shared with every
        client that gets the same batch.
        """
        direct = self._direct
        if (
            direct is None
            or self._queue
            or self._in_send
            or not self._sendable()
            or not direct.writable()
        ):
            for msg in messages:
                self.push(msg)
            return
        if direct.shares_frames:
            direct.write_frames(
                frames if frames is not None else b"".join(m.framed() for m in messages)
            )
        else:
            direct.write(m.encoded() for m in messages)
        self.stalled = 0
        count = len(messages)
        self.sent += count
        self._on_sent(count)
        observe = self._observe_lag
        now = time.perf_counter()
        for msg in messages:
            if msg.received:
                observe(now - msg.received)

    # -- sending -----------------------------------------------------------------------

    def attach(self, socket: ClientSocket) -> None:
        """Start the sender: from now on only it and :meth:`offer` write to ``socket``."""
        self._socket = socket
        self._direct = direct_writer(socket)
        self.direct = self._direct is not None
        self._task = asyncio.create_task(self._pump(socket), name="stream-client")

    def _sendable(self) -> bool:
        return self.close_code is None and not self.holding

    def _take(self, limit: int) -> list[Message]:
        batch: list[Message] = []
        while len(batch) < limit:
            msg = self.pop()
            if msg is None:
                break
            batch.append(msg)
        return batch

    async def _pump(self, socket: ClientSocket) -> None:
        observe = self._observe_lag
        direct = self._direct
        try:
            while self.close_code is None:
                await self._wake.wait()
                self._wake.clear()
                sent = 0
                while direct is not None and self._sendable():
                    self._in_send = True
                    await direct.ready()
                    self._in_send = False
                    if not self._sendable():
                        break
                    batch = self._take(_DIRECT_BATCH)
                    if not batch:
                        break
                    if direct.shares_frames and direct.writable():
                        direct.write_frames(b"".join(queued.framed() for queued in batch))
                    else:
                        direct.write(queued.encoded() for queued in batch)
                    self.stalled = 0
                    sent += len(batch)
                    now = time.perf_counter()
                    for queued in batch:
                        if queued.received:
                            observe(now - queued.received)
                while direct is None and self._sendable():
                    msg = self.pop()
                    if msg is None:
                        break
                    self._in_send = True
                    await socket.send_text(msg.text)
                    self._in_send = False
                    self.stalled = 0
                    sent += 1
                    if msg.received:
                        observe(time.perf_counter() - msg.received)
                if sent:
                    self.sent += sent
                    self._on_sent(sent)
        except Exception as exc:  # the peer went away mid-send
            log.debug("stream client send failed: %s", type(exc).__name__)
            self.closed.set()
            return
        await self._close_socket(socket, self.close_code)

    def request_close(self, code: int) -> None:
        """Close with ``code`` after the message being sent; a stuck send is abandoned."""
        if self.close_code is not None:
            return
        self.close_code = code
        self.clear()  # nothing more will be sent: release it now
        self._wake.set()
        task, socket = self._task, self._socket
        if task is None or socket is None:
            self.closed.set()
        elif self._in_send and not task.done():
            # the peer reads nothing, so the send never finishes: cancel it and close
            task.cancel()
            self._closer = asyncio.create_task(self._close_socket(socket, code))

    async def _close_socket(self, socket: ClientSocket, code: int | None) -> None:
        code = code if code is not None else 1000
        direct = direct_writer(socket)
        # directly, the close frame is queued behind the buffered frames at once (and the
        # route sees the disconnect); through ASGI it waits for the client to read
        if direct is None or not direct.close(code):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(socket.close(code), _CLOSE_WAIT)
        self.closed.set()

    async def wait_closed(self) -> None:
        await self.closed.wait()

    async def detach(self) -> None:
        """Stop the sender (the connection ended)."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.closed.set()


def fan_out(subscribers: Iterable[Subscriber], batch: list[Message]) -> None:
    """Each client's share of ``batch``, from the hub's loop (see :meth:`Subscriber.offer`);
    clients that get the whole batch share its frames, joined once."""
    frames: bytes | None = None
    size = len(batch)
    for sub in subscribers:
        if sub.accounts is None and sub.assets is None:
            mine = batch
        else:
            mine = [m for m in batch if sub.matches(m)]
            if not mine:
                continue
        if len(mine) == size:
            if frames is None:
                frames = b"".join(m.framed() for m in batch)
            sub.offer(mine, frames)
        else:
            sub.offer(mine)
