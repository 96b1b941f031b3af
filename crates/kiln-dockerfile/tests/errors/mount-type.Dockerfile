FROM debian
RUN --mount=type=weird,target=/x echo
