FROM debian
COPY --bogus a /b
