"""End-to-end benchmarks of balance-aggregator (SPEC §16): ``python -m bench``.

The bench starts a private Redis, a simulator host process and the service, drives real
traffic over loopback and prints one JSON object (the first stdout line) followed by a
markdown table. See ``docs/benchmarks.md``.
"""
