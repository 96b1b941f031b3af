# test: --target relase
FROM debian AS build
FROM scratch AS release
