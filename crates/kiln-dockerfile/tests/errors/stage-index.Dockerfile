FROM debian AS a
COPY --from=3 /x /y
