FROM debian
RUN --mount=type=cache,target=/c,uid=1000 echo
