"""The store's Lua scripts, read from the package's ``lua/`` folder.

Each write script is the fence (``lua/fence.lua``) followed by its own body, so every
write checks the account's lease in the same atomic step as it writes.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


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
