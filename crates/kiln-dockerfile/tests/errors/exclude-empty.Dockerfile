FROM debian
COPY --exclude= a /b
