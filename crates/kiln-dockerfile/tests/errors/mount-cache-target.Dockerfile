FROM debian
RUN --mount=type=cache echo
