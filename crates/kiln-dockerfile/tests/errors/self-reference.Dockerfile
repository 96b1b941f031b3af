FROM debian AS a
COPY --from=a /x /y
