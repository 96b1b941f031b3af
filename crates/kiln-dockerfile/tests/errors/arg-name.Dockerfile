FROM debian
ARG 9-bad!=x
