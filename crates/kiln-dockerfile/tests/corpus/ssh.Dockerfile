# test: --add-host db=10.0.0.5 --ulimit nofile=1024:2048 --shm-size 128m
FROM debian:bookworm
RUN --mount=type=ssh ssh-add -l
RUN --mount=type=ssh,id=github,required \
    --mount=type=ssh,id=deploy,target=/agent.sock,mode=0660,uid=1000,gid=1000 \
    git ls-remote git@github.com:example/private.git
