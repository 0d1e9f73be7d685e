"""The ``/v1/stream`` side of the service: Redis's change stream mirrored and fanned out.

Where it sits::

    Redis P:changes --XREAD BLOCK--> StreamHub (hub.py): follow, ring, reload, resume
        |-- Mirror (mirror.py)          records, statuses, cached bodies (pure, no I/O)
        |-- messages (messages.py)      the frames every client shares, built once
        `-- Subscriber (subscriber.py)  one per client: bounded conflating queue + sender
                `-- fastwrite.py        uvicorn's connection written to in batches
"""
