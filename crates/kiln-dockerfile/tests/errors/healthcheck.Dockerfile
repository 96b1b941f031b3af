FROM debian
HEALTHCHECK --interval=10x CMD true
