# lint::root-user: no USER on an image that runs as root
FROM debian@sha256:0000000000000000000000000000000000000000000000000000000000000000
RUN echo hi > /hi
