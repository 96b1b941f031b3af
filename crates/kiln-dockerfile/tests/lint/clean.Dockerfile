# no lint: pinned builder, distroless nonroot final stage
FROM debian@sha256:0000000000000000000000000000000000000000000000000000000000000000 AS build
RUN echo hi > /hi
FROM gcr.io/distroless/static-debian12:nonroot@sha256:0000000000000000000000000000000000000000000000000000000000000000
COPY --from=build /hi /hi
