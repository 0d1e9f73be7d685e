"""One router per resource of the REST surface and the stream (SPEC §8, §9).

:mod:`.balances` (balances, one account's balances), :mod:`.totals`, :mod:`.prices`,
:mod:`.accounts` (lifecycle, resync), :mod:`.health` (liveness, readiness, metrics) and
:mod:`.stream` (``/v1/stream``). Each declares its parameters with :mod:`app.api.params`
and what it needs from the running service with :mod:`app.api.deps`; all are mounted by
:func:`app.api.main.install_routes`.
"""
