"""balance-aggregator: live, exact, Redis-backed balances across four venues.

Amounts are ``Decimal``. Python's default decimal context keeps 28 significant digits
and would round a sum of two long amounts silently, so amount arithmetic names its
context: :data:`app.domain.EXACT` for balances (it raises rather than rounds) and
:data:`app.prices.graph.CONTEXT` for valuations. Nothing changes the process-wide context.
"""
