# examples/go-hello/Kilnfile as a Dockerfile, for `buildah bud --layers` in
# bench/build-e2e.sh. BUILDER is the same Debian bookworm image kiln builds
# from (debootstrap --variant=minbase, served by the local registry).
ARG BUILDER=docker.io/library/debian:bookworm
FROM ${BUILDER} AS build
RUN apt-get update && apt-get install -y --no-install-recommends golang-go
WORKDIR /src
COPY main.go main.go
ENV CGO_ENABLED=0
LABEL org.example.go-version=1.22
RUN go build -trimpath -ldflags='-s -w' -o /hello main.go

FROM scratch
COPY --from=build --chown=65532:65532 --chmod=0755 /hello /usr/local/bin/hello
ENTRYPOINT ["/usr/local/bin/hello"]
