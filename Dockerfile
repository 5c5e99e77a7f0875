# cloud-connector: outsystemscc (the default) and the cloud-connector gateway.
#
#   docker build -t cloud-connector .                      (hosted: python:3.11-slim)
#   docker build --build-arg BASE_IMAGE=cc-base:bookworm .  (a local base, see
#                                                           packaging/build-image.sh)
#
# Configured by the environment alone (README, "Configuration from the environment"):
#
#   docker run -e CC_SERVER=https://gw.example/sg_1 -e CC_REMOTES='R:8081:10.0.0.3:80' \
#       -e CC_HEADERS='token: ...' cloud-connector
#   docker run -p 8080:8080 -e AUTH=user:pass --entrypoint cloud-connector \
#       cloud-connector server --reverse
#
# The base must have python3 with venv, and a C compiler with the Python headers or
# apt-get to install them (the build stage only).  Both stages use one venv,
# /opt/cloud-connector, so Debian's own python3 (PEP 668) works as well as the
# python images' one.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# Where PyPI sits behind a TLS-inspecting proxy or a mirror (build-image.sh passes the
# first for its local base); unset by default.
ARG PIP_CERT
ARG PIP_INDEX_URL
RUN if ! command -v gcc >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
        && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python3 -m venv /opt/build
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md LICENSE ./
COPY packaging/build_backend.py ./packaging/
COPY cc ./cc
# The image must carry the compiled fast path: a failed compile fails the build.  The
# dependencies are built into wheels here too, so the final stage needs no index.
RUN CC_REQUIRE_EXTENSIONS=1 /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /wheels . \
    && ls /wheels/cloud_connector-*.whl

FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="cloud-connector" \
      org.opencontainers.image.description="OutSystems Cloud Connector (outsystemscc) and a chisel-v3 compatible gateway" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
COPY --from=build /wheels /tmp/wheels
COPY packaging/docker-healthcheck.py /usr/local/lib/cloud-connector-healthcheck.py
RUN python3 -m venv /opt/cloud-connector \
    && /opt/cloud-connector/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels \
        cloud-connector \
    && rm -rf /tmp/wheels \
    && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin connector \
    # Fail the build now, not the first start, if the fast path did not make it.
    && CC_REQUIRE_EXTENSIONS=1 /opt/cloud-connector/bin/cloud-connector version
ENV PATH=/opt/cloud-connector/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CC_REQUIRE_EXTENSIONS=1 \
    PORT=8080
USER connector
WORKDIR /tmp
# The gateway's port (PORT); a connector listens on nothing unless its remotes say so.
EXPOSE 8080
# CC_HEALTHCHECK_URL when set; else a gateway's /ready on PORT, a connector's /ready on
# CC_METRICS (its --metrics), or, with neither, a running connector is healthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "/usr/local/lib/cloud-connector-healthcheck.py"]
# No CMD: with no arguments outsystemscc takes CC_SERVER, CC_REMOTES, CC_HEADERS ...
# from the environment (a CMD of --help used to win over them and exit 0).
ENTRYPOINT ["outsystemscc"]
