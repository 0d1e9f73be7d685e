"""Resuming a stream client with ``since``: the ring of recent messages and the replay.

Where it sits: inside the stream hub (:mod:`app.stream.hub`). Every change the hub takes
goes into the :class:`Ring` (a message the client may not see is kept with empty text,
so the ring's seqs stay contiguous). A client that resumes gets what it missed from the
ring when the ring still holds it, else read again from Redis's change stream
(:func:`replay`); when neither can, the hub sends it a fresh snapshot instead.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from redis.exceptions import RedisError

from app.store import ResyncRequired
from app.stream.messages import Message, parse_change
from app.stream.source import RedisSource
from app.stream.subscriber import Subscriber

log = logging.getLogger(__name__)

RING_MAX = 10_000
REPLAY_CHUNK = 10_000


class Ring:
    """The last ``size`` messages the hub took, in seq order."""

    def __init__(self, size: int) -> None:
        self.size = max(1, min(size, RING_MAX))
        self._messages: deque[Message] = deque()

    def clear(self) -> None:
        self._messages.clear()

    def append(self, msg: Message) -> None:
        messages = self._messages
        messages.append(msg)
        if len(messages) > self.size:
            messages.popleft()

    def after(self, since: int, seq: int) -> list[Message] | None:
        """The messages after ``since`` up to ``seq`` (the hub's), or ``None`` when the
        ring no longer reaches back that far."""
        if since == seq:
            return []
        ring = self._messages
        if not ring or ring[0].seq > since + 1:
            return None
        start = since + 1 - ring[0].seq
        return [ring[i] for i in range(start, len(ring))]


async def replay(
    source: RedisSource,
    has_account: Callable[[str], bool],
    sub: Subscriber,
    since: int,
    upto: int,
) -> list[Message]:
    """The messages after ``since`` up to ``upto`` that ``sub`` follows, read from Redis.

    Raises :class:`~app.store.ResyncRequired` when the stream no longer holds them (and
    passes on Redis and parse errors): the client then needs a snapshot.
    """
    out: list[Message] = []
    cursor = since
    while cursor < upto:
        batch = await source.changes_since(cursor, min(REPLAY_CHUNK, upto - cursor))
        if not batch:
            raise ResyncRequired(f"changes after seq {cursor} are gone")
        for change in batch:
            if change.seq > upto:
                break
            msg, _doc = parse_change(change, 0.0)
            if has_account(msg.account) and sub.matches(msg):
                out.append(msg)
            cursor = change.seq
    return out


async def resume_from_redis(
    source: RedisSource,
    has_account: Callable[[str], bool],
    sub: Subscriber,
    since: int,
    upto: int,
    send_snapshot: Callable[[Subscriber], None],
) -> None:
    """Queue what ``sub`` missed after ``since``, read from Redis; live messages queue
    behind meanwhile. When the stream cannot give it, ``send_snapshot(sub)`` instead."""
    epoch = sub.epoch
    sub.holding = True
    try:
        missed = await replay(source, has_account, sub, since, upto)
    except (ResyncRequired, RedisError, OSError, TimeoutError, ValueError, KeyError) as exc:
        log.info("resume after seq %d not possible (%s); sending a snapshot", since, exc)
        if sub.epoch == epoch:
            send_snapshot(sub)
        return
    if sub.epoch != epoch:
        return  # a fresh snapshot superseded the replay meanwhile
    sub.holding = False
    sub.prepend(missed)
