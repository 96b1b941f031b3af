# test: --build-arg UNUSED=1
FROM debian
