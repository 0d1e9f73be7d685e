"""balance-aggregator: live, exact, Redis-backed balances across four venues.

Amounts are ``Decimal``. Python's default decimal context keeps 28 significant digits
and would round a sum of two long amounts silently, so the package raises the precision
for every thread to 100 digits (venue amounts are capped at 40 integer and 40 fraction
digits, so any sum or difference of them is exact).
"""

import decimal

decimal.DefaultContext.prec = 100
decimal.getcontext().prec = 100
