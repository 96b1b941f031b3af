FROM debian:bookworm
ONBUILD RUN echo later \
    && echo more
ONBUILD COPY . /app/
