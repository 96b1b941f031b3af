FROM debian
RUN --security=insecure echo
