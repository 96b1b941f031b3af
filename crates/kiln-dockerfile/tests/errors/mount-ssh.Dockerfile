FROM debian
RUN --mount=type=ssh,source=/agent git clone x
