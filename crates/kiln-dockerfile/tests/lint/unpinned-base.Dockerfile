# lint::unpinned-base: a base by tag
FROM debian:bookworm AS build
RUN echo hi > /hi
FROM scratch
COPY --from=build /hi /hi
USER 65532
