FROM debian
COPY --chmod=u+x a /b
