# examples/go-hello/Kilnfile's multi-platform build as Docker's documentation
# recommends writing it ("Cross-compilation" in docs.docker.com/build/building/
# multi-platform/): the builder on $BUILDPLATFORM, the compile for
# $TARGETARCH, the result on a platform-neutral final stage. For
# bench/multiplatform-cold.sh (BuildKit with --opt platform=linux/amd64,linux/arm64).
FROM --platform=$BUILDPLATFORM docker.io/library/debian:bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends golang-go
WORKDIR /src
COPY main.go main.go
ENV CGO_ENABLED=0
LABEL org.example.go-version=1.22
ARG TARGETARCH
RUN GOARCH=$TARGETARCH go build -trimpath -ldflags='-s -w' -o /hello main.go

FROM scratch
COPY --from=build --chown=65532:65532 --chmod=0755 /hello /usr/local/bin/hello
ENTRYPOINT ["/usr/local/bin/hello"]
