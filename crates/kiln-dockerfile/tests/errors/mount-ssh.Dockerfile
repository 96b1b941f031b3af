FROM debian
RUN --mount=type=ssh git clone x
