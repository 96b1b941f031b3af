# examples/python-app built the RUN way (issue #15's performance item 2):
# the same builder stage as the example's Kilnfile, and a final stage that
# is Debian with python3 installed by apt-get instead of static_base() plus
# a package set. Used by bench/python-runway.sh with kiln and BuildKit.
FROM debian:bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip
WORKDIR /src
COPY wheels wheels
RUN pip install --no-index --find-links wheels --target /app/site markupsafe six
COPY app.py /app/app.py

FROM debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /app /app
ENV PYTHONPATH=/app/site
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["python3", "/app/app.py"]
