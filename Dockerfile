# syntax=docker/dockerfile:1
# api-gateway: a static binary on distroless, run as a non-root user.
#   docker build -t api-gateway .
#   docker run -p 8080:8080 -p 9090:9090 -p 18000:18000 -e ADMIN_TOKEN=... api-gateway

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/api-gateway ./cmd/api-gateway \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/api-gateway /usr/local/bin/api-gateway
COPY --from=build --chown=65532:65532 /out/data /data
ENV DATA_DIR=/data
USER 65532:65532
EXPOSE 8080 9090 18000
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/api-gateway"]
CMD ["serve"]
