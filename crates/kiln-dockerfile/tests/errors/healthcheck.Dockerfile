FROM debian
HEALTHCHECK CMD curl -f http://localhost/
