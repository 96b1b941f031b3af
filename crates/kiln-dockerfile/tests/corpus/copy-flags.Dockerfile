FROM debian:bookworm AS build
RUN mkdir -p /out && echo x > /out/x
FROM debian:bookworm
WORKDIR /app
COPY . .
COPY --exclude=*.md --exclude=docs docs/ /docs/
COPY *.go go.mod ./
COPY src/*/main.go /cmd/
COPY --link --chown=app:app --chmod=640 config.toml /etc/app/
COPY --from=0 /out /from-index
COPY --from=build /out/x /x
COPY --from=docker.io/library/busybox:1.36 /bin/busybox /bin/
ADD notes.txt /notes/
ADD ["with space.txt", "/spaced/"]
COPY "quoted".txt /q/
