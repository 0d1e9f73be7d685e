"""Balance history (SPEC §17): every folded change, kept exactly, in a real database.

Flow: the change stream ``P:changes`` (app.store) -> :class:`~app.history.writer.HistoryWriter`
(a Redis Streams consumer group, one per deployment; entries parsed by
:mod:`app.history.entries`, stored as the rows of :mod:`app.history.rows`) -> SQLAlchemy Core tables
(:mod:`app.history.schema`: SQLite under the data directory by default, PostgreSQL by
URL) -> :mod:`app.history.queries` -> the HTTP routes in :mod:`app.history.api`, as JSON
or streamed CSV (:mod:`app.history.export`). :mod:`app.history.prices` records prices
over time for valuation.
"""
