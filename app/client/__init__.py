"""Terminal client for a running service: ``balances``, ``totals``, ``accounts``, ``prices``
and ``watch``.

It sits outside the service: it only speaks the public REST routes and ``/v1/stream``
(SPEC §8–§9), so it works against any deployment it can reach.

- ``connection``: where the service is, the token, HTTP reads and the stream handshake,
  and the errors a user can act on;
- ``render``: tables (rich), CSV and JSON from the service's documents, exact strings;
- ``watch``: the live view that follows ``/v1/stream`` and resumes with ``since=``;
- ``commands``: the subcommands and their ``--help``.
"""
