FROM debian:bookworm AS deps
RUN echo deps > /deps.txt
FROM debian:bookworm
WORKDIR /src
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,id=go-build,target=/root/.cache/go-build \
    apt-get update
RUN --mount=type=secret,id=token,required \
    --mount=type=secret,id=aws,target=/root/.aws/credentials,mode=0444,uid=1000 \
    --mount=type=secret,id=npmrc,env=NPM_TOKEN \
    cat /run/secrets/token
RUN --mount=type=tmpfs,target=/scratch,size=64m ls /scratch
RUN --mount=type=bind,from=deps,source=/deps.txt,target=/mnt/deps.txt \
    --mount=type=bind,source=go.mod,target=go.mod \
    --mount=type=bind,target=/ctx,rw \
    cat /mnt/deps.txt go.mod
RUN --network=none echo offline
RUN --security=sandbox true
