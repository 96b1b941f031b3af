FROM debian
COPY --chown= a /b
