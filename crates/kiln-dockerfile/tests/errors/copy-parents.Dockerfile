FROM debian
COPY --parents a/b /c/
