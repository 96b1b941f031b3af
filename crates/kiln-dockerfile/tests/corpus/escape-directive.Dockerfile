# escape=`
FROM debian:bookworm
RUN echo one `
    && echo two
ENV P=C:\Windows
COPY a`.txt /
