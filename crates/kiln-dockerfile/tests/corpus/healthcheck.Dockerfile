FROM debian:bookworm AS a
HEALTHCHECK --interval=30s --timeout=5s --start-period=1m30s --retries=3 CMD curl -f http://localhost/ || exit 1
FROM a AS b
HEALTHCHECK CMD ["/bin/check", "--quick"]
FROM b
HEALTHCHECK NONE
