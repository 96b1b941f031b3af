FROM debian
COPY --chmod=u+x,gz a /b
