FROM debian:bookworm
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
RUN echo $BASH_VERSION | cat
RUN ["/bin/echo", "exec form"]
CMD echo cmd through bash
