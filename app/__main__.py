"""``python -m app`` is the ``balance-aggregator`` command."""

from app.cli import main

raise SystemExit(main())
