"""Change-stream entries as the history writer reads them.

Where it sits: between ``P:changes`` (written by :mod:`app.store`) and the history
writer (:mod:`app.history.writer`): the script that reads new entries for the writer's
consumer group in one framed string, and the parsing of that string and of plain
``XREADGROUP``/``XAUTOCLAIM`` replies into :data:`Entry` tuples.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any


def wall_us() -> int:
    return time.time_ns() // 1000


def iso_to_us(text: str) -> int | None:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


def field_text(fields: dict[Any, Any], name: str) -> str:
    value = fields.get(name.encode(), fields.get(name))
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def seq_of(entry_id: bytes | str) -> int:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(eid.partition("-")[0])


Entry = tuple[bytes | str, int, str, bytes | str | None]
"""A stream entry as the writer needs it: its id, seq, ``t`` (epoch µs, may be empty) and
the message ``m``; ``m`` is None for an entry the stream no longer holds (pending, trimmed)."""


def entry_of(entry_id: bytes | str, fields: dict[Any, Any] | None) -> Entry:
    if not fields:
        return entry_id, seq_of(entry_id), "", None
    m = fields.get(b"m", fields.get("m"))
    return entry_id, seq_of(entry_id), field_text(fields, "t"), m if m is not None else b""


# XREADGROUP as a script that returns only what the writer reads, as one string: per
# entry a header line "<id> <t> <length of m>" and then m itself (length-prefixed, so m's
# bytes need no escaping; t is blanked unless it is digits, so a header is always one
# line of three words). Parsing the full reply (an id plus four field/value pairs per
# entry, each a separate RESP element, in redis-py's pure-Python parser) cost the writer
# more than its database did. Scripts cannot block, so an empty answer falls back to the
# blocking XREADGROUP. Reading inside a script changes nothing in the group's semantics:
# the entries are delivered to this consumer and stay pending until XACK.
READ_NEW = """
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                     'STREAMS', KEYS[1], '>')
if not r then return '' end
local out = {}
for _, e in ipairs(r[1][2]) do
  local f, t, m = e[2], '', ''
  for i = 1, #f, 2 do
    if f[i] == 't' then t = f[i + 1] elseif f[i] == 'm' then m = f[i + 1] end
  end
  if not string.match(t, '^%d+$') then t = '' end
  out[#out + 1] = e[1] .. ' ' .. t .. ' ' .. #m .. '\\n' .. m
end
return table.concat(out)
"""


def unframe(blob: bytes) -> list[Entry]:
    """The entries of one :data:`READ_NEW` answer."""
    out: list[Entry] = []
    pos, end = 0, len(blob)
    while pos < end:
        eol = blob.index(b"\n", pos)
        entry_id, t, size = blob[pos:eol].split(b" ")
        pos = eol + 1 + int(size)
        out.append((entry_id, seq_of(entry_id), t.decode(), blob[eol + 1 : pos]))
    if pos != end:
        raise ValueError("history: malformed stream read (a message overran the answer)")
    return out
