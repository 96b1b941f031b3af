# lint::run-without-shell: neither has Chainguard's static
FROM cgr.dev/chainguard/static@sha256:0000000000000000000000000000000000000000000000000000000000000000
RUN ["/hello"]
