"""The Dockerfile's promises, read from the file (packaging/build-image.sh builds and runs it):
a base image argument, two stages, a non-root user, the compiled fast path required, a
health check, the gateway's port, OCI labels and no CMD to override env configuration."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
INSTRUCTIONS = [
    line.strip()
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def _all(keyword: str) -> list[str]:
    return [i for i in INSTRUCTIONS if i.split()[0] == keyword]


def test_base_image_is_an_argument_with_a_hosted_default() -> None:
    assert INSTRUCTIONS[0] == "ARG BASE_IMAGE=python:3.11-slim"
    froms = _all("FROM")
    assert froms == ["FROM ${BASE_IMAGE} AS build", "FROM ${BASE_IMAGE}"]


def test_runs_as_a_user_and_requires_the_compiled_fast_path() -> None:
    assert _all("USER") == ["USER connector"]
    assert "CC_REQUIRE_EXTENSIONS=1 /opt/build/bin/pip wheel" in DOCKERFILE
    env = " ".join(_all("ENV"))
    assert "CC_REQUIRE_EXTENSIONS=1" in env


def test_env_only_configuration_is_not_overridden_by_a_cmd() -> None:
    assert _all("CMD") == []
    assert _all("ENTRYPOINT") == ['ENTRYPOINT ["outsystemscc"]']


def test_health_check_port_and_labels() -> None:
    (health,) = _all("HEALTHCHECK")
    assert health.endswith('CMD ["python3", "/usr/local/lib/cloud-connector-healthcheck.py"]')
    assert "COPY packaging/docker-healthcheck.py /usr/local/lib/cloud-connector-healthcheck.py" in (
        INSTRUCTIONS
    )
    assert _all("EXPOSE") == ["EXPOSE 8080"]
    labels = " ".join(_all("LABEL"))
    for key in ("title", "description", "version", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels, key


def test_dockerignore_lets_in_only_what_the_build_copies() -> None:
    ignore = [
        line for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] not in "#"
    ]
    assert ignore[0] == "*"
    copied = {"pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "cc/"}
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert copied <= allowed
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M):
        for path in source.split():
            assert path in allowed or path.rstrip("/") + "/" in allowed, path
