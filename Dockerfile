# One image for the operator, the worker pods, the judge and the CLI.
# It cannot be built on the development machines of this project (no Docker
# engine there); CI elsewhere, or a laptop with Docker, builds it:
#   docker build -t proxyrefresh:dev .

# mubeng for `engine: mubeng` and the rotator, from its Go module, pinned.
FROM golang:1.24-bookworm AS mubeng
ARG MUBENG_VERSION=v0.22.0
RUN CGO_ENABLED=0 GOBIN=/out go install -trimpath -ldflags="-s -w" \
      "github.com/mubeng/mubeng@${MUBENG_VERSION}"

# The wheel and its dependencies into a virtualenv, at the versions the
# test suite passed with (hack/constraints.txt; it resolves for 3.12 too).
FROM python:3.12-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md hack/constraints.txt ./
COPY proxyrefresh ./proxyrefresh
COPY operator ./operator
COPY worker ./worker
RUN PIP_CONSTRAINT=/src/constraints.txt /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.12-slim-bookworm
LABEL org.opencontainers.image.title="proxyrefresh" \
      org.opencontainers.image.description="Kubernetes operator that keeps a pool of working proxies fresh" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
COPY --from=mubeng /out/mubeng /usr/local/bin/mubeng
# Non-root, and nothing is written to the root filesystem at run time, so
# the pods run with readOnlyRootFilesystem.
USER 65532:65532
HEALTHCHECK NONE
ENTRYPOINT ["proxyrefresh"]
CMD ["--help"]
