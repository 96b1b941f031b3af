# syntax=docker/dockerfile:1
# The seeds' Go hello: a Debian builder, shipped on scratch.
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
USER 65532
ENTRYPOINT ["/usr/local/bin/hello"]
