FROM debian
RUN --mount=type=bind,target=/x,bogus=1 echo
