"""The store's Lua scripts, read from the package's ``lua/`` folder.

Each write script is the fence (``lua/fence.lua``) followed by its own body, so every
write checks the account's lease in the same atomic step as it writes. Scripts sent in
pipelines go as :class:`PipelinedScript` (one round trip per pipeline).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from functools import cache
from importlib.resources import files
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError


@cache
def lua(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    return files(__package__).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def fenced(name: str) -> str:
    """A write script: the fence, then ``lua/<name>.lua``."""
    return lua("fence") + lua(name)


APPLY = "apply"
NOTE = "note"
SEQ_FLOOR = "seq_floor"


class PipelinedScript:
    """A Lua script run on pipelines by its SHA1 alone (``EVALSHA``), in one round trip.

    redis-py's registered scripts ask ``SCRIPT EXISTS`` before every pipeline holding one:
    a second round trip per pipeline. Here nothing is asked: a pipeline whose replies
    hold a ``NOSCRIPT`` error (first use, a restarted Redis, a flushed script cache) is
    loaded with :meth:`load` and run again by its caller, which only pipelines scripts
    that are safe to run twice.
    """

    def __init__(self, client: aioredis.Redis, text: str) -> None:
        self._client = client
        self.text = text
        self.sha = hashlib.sha1(text.encode("utf-8")).hexdigest()

    def queue(self, pipe: Pipeline, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Add one run of the script to ``pipe``."""
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

    async def load(self) -> None:
        """Put the script into Redis's script cache."""
        await self._client.script_load(self.text)


def missing_script(replies: Iterable[Any]) -> bool:
    """True if a pipeline's replies (``raise_on_error=False``) say a script was not loaded."""
    return any(isinstance(reply, NoScriptError) for reply in replies)
