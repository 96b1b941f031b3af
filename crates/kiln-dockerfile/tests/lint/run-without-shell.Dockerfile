# lint::run-without-shell: distroless has no shell
FROM gcr.io/distroless/static-debian12@sha256:0000000000000000000000000000000000000000000000000000000000000000
RUN echo hi
USER 65532
