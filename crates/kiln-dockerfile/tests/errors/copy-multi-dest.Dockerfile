FROM debian
COPY a b /dest
