# One image for the operator, the worker pods, the judge and the CLI.
#
#   docker build -t proxyrefresh:dev .
#
# Build arguments:
#   PYTHON_IMAGE  the base image, any Debian-based image with python3 and its
#                 venv module on PATH as `python` (default: the official slim
#                 Python image). The test suite builds this file with buildah
#                 on a base it makes from Debian packages (hack/image.sh),
#                 since no image registry is reachable there.
#   MUBENG        `build` compiles mubeng from its Go module for
#                 `engine: mubeng` and the mubeng rotator; `none` leaves it
#                 out (the native engine and rotator need nothing from it).
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG MUBENG=build

# mubeng from its Go module, pinned. Built only when MUBENG=build: a stage
# that nothing copies from is skipped (BuildKit and buildah alike).
FROM golang:1.24-bookworm AS mubeng-build
ARG MUBENG_VERSION=v0.22.0
RUN CGO_ENABLED=0 GOBIN=/out go install -trimpath -ldflags="-s -w" \
      "github.com/mubeng/mubeng@${MUBENG_VERSION}"

FROM ${PYTHON_IMAGE} AS mubeng-none
RUN mkdir /out

# hadolint ignore=DL3006
FROM mubeng-${MUBENG} AS mubeng

# The wheel and its dependencies into a virtualenv, at the versions the
# test suite passed with (hack/constraints.txt; it resolves for 3.11 and 3.12).
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md hack/constraints.txt ./
COPY proxyrefresh ./proxyrefresh
COPY operator ./operator
COPY worker ./worker
# pip compiles the bytecode here, so nothing needs writing at run time. A
# build behind a TLS-inspecting proxy gives pip that proxy's CA bundle:
#   docker build --secret id=ca-bundle,src=/path/to/ca-bundle.pem .
RUN --mount=type=secret,id=ca-bundle \
    if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    PIP_CONSTRAINT=/src/constraints.txt /opt/venv/bin/pip install --no-cache-dir .

# hadolint ignore=DL3006
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="proxyrefresh" \
      org.opencontainers.image.description="Kubernetes operator that keeps a pool of working proxies fresh" \
      org.opencontainers.image.licenses="Apache-2.0"
# Non-root, and nothing is written to the root filesystem at run time, so
# the pods run with readOnlyRootFilesystem.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
COPY --from=mubeng /out/ /usr/local/bin/
# The user the pods run as has a name, for whatever looks it up; nothing may
# depend on it, though: a platform may run the image under any UID.
RUN groupadd --system --gid 65532 proxyrefresh \
    && useradd --system --uid 65532 --gid 65532 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin proxyrefresh
USER 65532:65532
HEALTHCHECK NONE
ENTRYPOINT ["proxyrefresh"]
CMD ["--help"]
