# Flink JobManager/TaskManager image: the official Flink 2.0 distribution + Python 3.11 with
# apache-flink==2.0.2 and the project (the UDF workers import udfs/, jobs/, infra/), and the
# Kafka connector in /opt/flink/lib. Build context: the repository root (docker-compose.yml).
# NOT built or pulled on the machine this was written on (no Docker engine there).
ARG FLINK_IMAGE=flink:2.0.2-scala_2.12-java17
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9
FROM ${UV_IMAGE} AS uv

FROM ${FLINK_IMAGE}
# Maven Central coordinates of the connector (= the jars `candleflow install-jars` uses).
ARG MAVEN=https://repo1.maven.org/maven2
ARG KAFKA_CONNECTOR_VERSION=4.0.1-2.0
ARG KAFKA_CLIENTS_VERSION=3.9.1
# Optional pinned SHA-256s of the two jars. They could not be fetched where this file was
# written (Maven Central unreachable), so they are empty and the build checks each jar
# against the .sha1 published next to it on Maven Central instead; set them to pin.
ARG KAFKA_CONNECTOR_SHA256=
ARG KAFKA_CLIENTS_SHA256=
ARG PYTHON_VERSION=3.11

USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl openjdk-17-jdk-headless \
    && rm -rf /var/lib/apt/lists/*

# Connector jars (verified) -> /opt/flink/lib
RUN set -eu; \
    fetch() { \
      url="$1"; sha256="$2"; out="/opt/flink/lib/$(basename "$url")"; \
      curl -fsSL -o "$out" "$url"; \
      echo "$(curl -fsSL "$url.sha1" | cut -c1-40)  $out" | sha1sum -c -; \
      if [ -n "$sha256" ]; then echo "$sha256  $out" | sha256sum -c -; fi; \
    }; \
    fetch "$MAVEN/org/apache/flink/flink-connector-kafka/$KAFKA_CONNECTOR_VERSION/flink-connector-kafka-$KAFKA_CONNECTOR_VERSION.jar" "$KAFKA_CONNECTOR_SHA256"; \
    fetch "$MAVEN/org/apache/kafka/kafka-clients/$KAFKA_CLIENTS_VERSION/kafka-clients-$KAFKA_CLIENTS_VERSION.jar" "$KAFKA_CLIENTS_SHA256"; \
    chown flink:flink /opt/flink/lib/*.jar

# Python 3.11 (uv-managed, portable build) + the locked dependencies (uv.lock) in /opt/venv;
# the project is installed editable from /opt/candleflow, so sql/ and feature_repo/ are
# found next to the code (infra.settings.REPO_ROOT).
COPY --from=uv /uv /uvx /usr/local/bin/
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /opt/candleflow
COPY pyproject.toml uv.lock README.md ./
RUN uv python install "$PYTHON_VERSION" \
    && uv sync --frozen --no-default-groups --no-install-project --python "$PYTHON_VERSION"
COPY jobs ./jobs
COPY udfs ./udfs
COPY infra ./infra
COPY sql ./sql
COPY bentos ./bentos
COPY feature_repo ./feature_repo
RUN uv sync --frozen --no-default-groups --python "$PYTHON_VERSION" \
    && chmod -R a+rX /opt/python /opt/venv /opt/candleflow
ENV PATH=/opt/venv/bin:$PATH \
    CANDLEFLOW_JARS_DIR=/opt/candleflow/jars \
    CANDLEFLOW_STATE_DIR=/tmp/candleflow-state
# the client side of `candleflow submit` inside the container puts these jars (and the
# project's Java functions, udfs/java, compiled here with javac) in
# pipeline.jars (SHA-256-checked PyPI redistribution of the same versions; see infra/jars.py);
# classloader.parent-first-patterns.additional=org.apache.kafka. in docker-compose.yml keeps
# the copies in /opt/flink/lib authoritative
RUN candleflow install-jars && chmod -R a+rX /opt/candleflow/jars

# checkpoints/savepoints: the `flink-data` volume (shared by the JobManager and TaskManagers)
RUN mkdir -p /flink-data/checkpoints /flink-data/savepoints && chown -R flink:flink /flink-data
WORKDIR /opt/flink
# the base image's entrypoint (jobmanager | taskmanager) drops to the `flink` user
