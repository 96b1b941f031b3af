FROM debian
EXPOSE 80/http
