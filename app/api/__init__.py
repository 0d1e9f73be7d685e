"""The HTTP surface: REST (SPEC §8), the ``/v1/stream`` WebSocket (§9) and ``/metrics``.

Every read is served from the :class:`~app.stream.hub.StreamHub` mirror and the in-memory price
graph, never from a Redis round trip (``/readyz`` pings Redis on purpose), so a response's
``seq`` always matches the state it shows. Amounts are strings everywhere; bodies are
built with orjson (the pydantic models of :mod:`.models` describe them for the OpenAPI
document at ``/docs`` and are not on the hot path). Every error, including unknown routes,
wrong methods and invalid parameters, is ``{"error": {"code", "message"}}``.

Layout, outside in: :mod:`.main` (``install_routes``: guard, fast path, handlers,
routers), :mod:`.fast` (the plain balance reads without the framework), :mod:`.routes`
(one router per resource), :mod:`.deps` (what a route needs from the running service,
and the 503s while it is not there), :mod:`.params` (parameter declarations and parsing),
:mod:`.models` (response shapes), :mod:`.errors` (error exceptions, body, handlers).
Valuation rules are not HTTP: they live in :mod:`app.valuation` and :mod:`app.prices`.

This package's ``__init__`` imports nothing, so :mod:`app.history.api` can share
:mod:`.params` and :mod:`.errors` without an import cycle; the app imports
:func:`app.api.main.install_routes`.
"""
