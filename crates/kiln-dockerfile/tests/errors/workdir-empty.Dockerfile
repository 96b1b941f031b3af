FROM debian
WORKDIR ""
