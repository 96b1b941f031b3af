FROM debian
ONBUILD RUN echo later
