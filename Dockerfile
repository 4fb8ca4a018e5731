# stability-gateway: docker build -t stability-gateway . && docker run -p 8080:8080 stability-gateway
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STABILITY_GATEWAY_CACHE_DIR=/data/cache

WORKDIR /app
COPY pyproject.toml README.md config.toml ./
COPY gateway ./gateway
COPY cache ./cache
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /data gateway \
    && mkdir -p /data/cache && chown -R gateway /data

USER gateway
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"
# Inside the container the gateway listens on all interfaces so the published port works.
CMD ["stability-gateway", "serve", "--config", "/app/config.toml", "--host", "0.0.0.0", "--port", "8080"]
