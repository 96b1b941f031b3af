FROM debian
RUN --device=/dev/fuse echo
