FROM debian
COPY --chmod=999 a /b
