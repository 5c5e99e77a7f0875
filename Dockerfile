# cloud-connector: outsystemscc (default entrypoint) and the cloud-connector gateway.
# Build: docker build -t cloud-connector .
# Run:   docker run --rm -it cloud-connector --help
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY cc ./cc
# CC_REQUIRE_EXTENSIONS: the image must carry the compiled fast path.
RUN CC_REQUIRE_EXTENSIONS=1 pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home connector
USER connector
WORKDIR /tmp
# Every option can also come from the environment (see README), as container
# platforms expect.
# Health: set CC_HEALTHCHECK_URL to a /ready endpoint, e.g. with CC_METRICS=9090,
# http://127.0.0.1:9090/ready (gateway: http://127.0.0.1:8080/ready); unset, healthy.
ENV CC_HEALTHCHECK_URL=""
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s CMD python -c "import os,sys,urllib.request as u; url=os.environ.get('CC_HEALTHCHECK_URL'); sys.exit(0 if not url or u.urlopen(url, timeout=4).status == 200 else 1)"
ENTRYPOINT ["outsystemscc"]
CMD ["--help"]
