FROM debian
COPY --parents=maybe a/b /dest/
