# A Python service the RUN way: builder with venv, final with python3.
FROM debian:bookworm AS build
RUN --mount=type=cache,target=/var/cache/apt \
    apt-get update && apt-get install -y --no-install-recommends python3 python3-venv
RUN python3 -m venv /venv
ENV PATH="/venv/bin:$PATH"
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY app.py /app/

FROM debian:bookworm-slim AS final
RUN apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /venv /venv
COPY --from=build /app /app
ENV PATH="/venv/bin:$PATH" PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8000
CMD ["python3", "/app/app.py"]
