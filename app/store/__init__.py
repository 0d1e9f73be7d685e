"""The Redis-backed balance state: atomic writes, the numbered change stream, and reads.

Flow: ``fold -> BalanceWriter -> Redis -> BalanceReader -> hub / REST / history``.

- :mod:`.keys`: every key name and kind (the layout is drawn there);
- :mod:`.records`: the record and status wire shape (the Python twin of the Lua);
- :mod:`.scripts` and ``lua/*.lua``: the atomic write scripts, fence first;
- :mod:`.writer`: :class:`BalanceWriter`, batching writes into one round trip;
- :mod:`.reader`: :class:`BalanceReader`, snapshots and the change stream.

The names other modules use are re-exported here.
"""

from app.canonical import decimal_str, iso_time, iso_time_us, utc_now_iso
from app.store.keys import FIELD_SEP, AccountKey, GlobalKey, Keys, field_name
from app.store.reader import BalanceReader, Change, ResyncRequired, StateSnapshot
from app.store.records import decode_record, encode_content, parse_status
from app.store.writer import BalanceWriter, FenceLookup, FlushResult

__all__ = [
    "FIELD_SEP",
    "AccountKey",
    "BalanceReader",
    "BalanceWriter",
    "Change",
    "FenceLookup",
    "FlushResult",
    "GlobalKey",
    "Keys",
    "ResyncRequired",
    "StateSnapshot",
    "decimal_str",
    "decode_record",
    "encode_content",
    "field_name",
    "iso_time",
    "iso_time_us",
    "parse_status",
    "utc_now_iso",
]
