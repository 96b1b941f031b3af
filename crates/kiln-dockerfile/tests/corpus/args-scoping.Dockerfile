# test: --build-arg VERSION=2.0 --build-arg STAGE_ONLY=x
ARG VERSION=1.0
ARG BASE=debian
FROM ${BASE}:bookworm AS one
# not redeclared: VERSION is empty here
RUN echo "v=$VERSION"
ARG VERSION
RUN echo "v=$VERSION"
ARG STAGE_ONLY
ARG LOCAL=${VERSION}-local
ENV FROM_ARG=${LOCAL}
RUN echo "$LOCAL $STAGE_ONLY"

FROM one
ENV VERSION=env-wins
ARG VERSION=arg-loses
LABEL v=$VERSION inherited=$FROM_ARG
