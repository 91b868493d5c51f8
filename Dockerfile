# syntax=docker/dockerfile:1
#
# token-sidecar image: one static binary on distroless static, running as the
# nonroot user (65532), no shell, nothing writable needed.
#
#   docker build --build-arg VERSION=1.2.3 -t token-sidecar:1.2.3 .
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg VERSION=1.2.3 .
#   docker build --build-arg BUILD=lean -t token-sidecar:1.2.3-lean .
#
# BUILD=lean is the build without OTLP export (-tags nootlp, no gRPC): a
# smaller binary for pods that are scraped on /metrics only; it refuses
# OTEL_*_EXPORTER=otlp at start. The default, full, has every feature.
#
# The binary is built by .ci/build-binary, the script CI runs too, so the
# flags (CGO_ENABLED=0 -trimpath -ldflags "-s -w -X main.version=…") have one
# definition; the script also checks the result with .ci/check-static.

# Build on the build machine's own platform and cross-compile: with cgo off
# Go needs no emulator for other targets.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src

# Modules first, so that this layer survives source changes.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG BUILD=full
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH VERSION=$VERSION BUILD=$BUILD \
    bash .ci/build-binary /out/token-sidecar

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="token-sidecar" \
      org.opencontainers.image.description="Caching token sidecar for Genesys Cloud client-credentials tokens" \
      org.opencontainers.image.source="https://github.com/token-sidecar/token-sidecar" \
      org.opencontainers.image.version="$VERSION"
COPY --from=build /out/token-sidecar /token-sidecar
USER 65532
# 8181: token listener — it binds 127.0.0.1 by default (pod-local only), so
# this is documentation. 9464: admin listener (/healthz, /readyz, /metrics).
EXPOSE 8181 9464
ENTRYPOINT ["/token-sidecar"]
