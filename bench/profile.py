"""``python -m bench.profile FILE [--top N]``: sum py-spy's raw stacks (``--raw``).

Each line of the file is ``frame;frame;...;leaf count``. Printed: the share of samples
per leaf frame (where the time is spent), per frame anywhere in the stack (inclusive:
what it costs with everything it calls), and per innermost frame of the project's own
code (``app/``), which names the part of the service that caused the cost.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_OWN = re.compile(r"[ (/]app/")


def _short(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py:12)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def summarize(text: str, top: int) -> str:
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        leaf[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
        mine = [f for f in stack.split(";") if _OWN.search(f)]
        own[_short(mine[-1]) if mine else "(outside app/)"] += n
    out = [f"{total:,} samples"]
    for title, counter in (("leaf", leaf), ("inclusive", inclusive), ("innermost app/", own)):
        out.append(f"\n{title}:")
        for frame, n in counter.most_common(top):
            out.append(f"{n / max(1, total):7.1%}  {frame}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    sys.stdout.write(summarize(args.file.read_text(), args.top) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
