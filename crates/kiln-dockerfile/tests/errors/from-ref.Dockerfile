FROM debian
COPY --from=nosuch/ /x /y
