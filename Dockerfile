# pep, the authorization sidecar: a slim, non-root image.
#
#   docker build -t pep:0.1.0 .
#   docker run --rm -v "$PWD/pep.yaml:/etc/pep/pep.yaml:ro" -v "$PWD/policies:/policies:ro" pep:0.1.0
#
# The base is pinned to an exact Python patch release on Debian bookworm; pin it by digest
# too (python:3.11.14-slim-bookworm@sha256:...) in your registry mirror for reproducible
# builds. Runs as uid/gid 65532 with a read-only root filesystem (nothing is written but
# the Unix socket, in a mounted volume).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/pep
COPY pyproject.toml README.md ./
COPY pep ./pep
# Only runtime dependencies (no dev extras); wheels for grpcio, cedarpy and cryptography.
RUN /opt/pep/bin/pip install --no-cache-dir . \
    && /opt/pep/bin/python -m compileall -q /opt/pep/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="pep" \
      org.opencontainers.image.description="Authorization sidecar for AI agents" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/pep/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 65532 pep \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pep
COPY --from=build /opt/pep /opt/pep
USER 65532:65532
# gRPC (pep.v1.Authorizer, Envoy ext_authz, health, reflection) and Prometheus metrics.
EXPOSE 50051 9464
ENTRYPOINT ["pep"]
CMD ["serve", "--config", "/etc/pep/pep.yaml"]
