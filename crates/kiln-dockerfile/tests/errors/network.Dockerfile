FROM debian
RUN --network=bridge echo
