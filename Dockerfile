# syntax=docker/dockerfile:1
#
# balance-aggregator container image.
#
#   docker build -t balance-aggregator .
#   docker run --rm -p 8000:8000 -e BALAGG_REDIS_URL=redis://redis:6379/0 \
#       -v "$PWD/accounts.yaml:/config/accounts.yaml:ro" balance-aggregator
#
# Without an accounts file at /config/accounts.yaml the service stops at start-up (set
# BALAGG_ALLOW_NO_ACCOUNTS=true to run with none). The entrypoint is the
# `balance-aggregator` command, so any subcommand can be run: `docker run --rm -v ...
# balance-aggregator check-config`, `... simulate --host 0.0.0.0 --port 9001`.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- builder: a wheel of the project and a virtualenv with it and its dependencies --------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/venv
# Only what the wheel is built from; README.md is the package's long description.
COPY pyproject.toml README.md ./
COPY app ./app
RUN /opt/venv/bin/pip install --upgrade pip wheel \
 && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/balance_aggregator-*.whl \
 && /opt/venv/bin/balance-aggregator --help >/dev/null

# -- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# tini as PID 1: forwards SIGTERM to the service (which closes its sockets with 1001,
# flushes pending writes and exits 0) and reaps children such as the embedded
# redis-server the service starts when BALAGG_REDIS_URL is unset.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 balagg \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin balagg \
 && mkdir -p /data /config /app \
 && chown 10001:10001 /data

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BALAGG_HOST=0.0.0.0 \
    BALAGG_PORT=8000 \
    BALAGG_DATA_DIR=/data \
    BALAGG_ACCOUNTS_FILE=/config/accounts.yaml

# Settings also read a .env file from the working directory; /app is empty on purpose.
WORKDIR /app
VOLUME ["/data"]
EXPOSE 8000
USER 10001:10001

# slim has no curl: probe /healthz with the interpreter that is already there.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BALAGG_PORT', '8000'), timeout=4)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "balance-aggregator"]
CMD ["serve"]
