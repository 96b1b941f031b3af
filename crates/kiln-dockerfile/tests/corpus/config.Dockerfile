FROM debian:bookworm
ENV A=1 B="two words" C=c\ d
ENV OLD form with spaces
ENV D=${A}-$B
LABEL one=1 "two words"="v" three="${D}"
MAINTAINER someone@example.com
EXPOSE 80 443/tcp 53/udp 8000-8010
VOLUME ["/data", "/logs"]
VOLUME /cache
STOPSIGNAL SIGQUIT
USER app:app
WORKDIR /srv
WORKDIR sub
WORKDIR $A
CMD echo "shell form"
ENTRYPOINT ["/bin/app", "--flag"]
