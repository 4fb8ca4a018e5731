# stability-gateway: docker build -t stability-gateway . && docker run -p 8080:8080 stability-gateway
# With a key: docker run -e STABILITY_API_KEY -e STABILITY_GATEWAY_ADMIN_TOKEN -p 8080:8080 ...
# Workers: -e STABILITY_GATEWAY_WORKERS=4 (they share the rate limit through /data/cache).
# Replicas: -e STABILITY_GATEWAY_REDIS_URL=redis://... (docker-compose.yml; README "Scaling out").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STABILITY_GATEWAY_CACHE_DIR=/data/cache \
    STABILITY_GATEWAY_WORKERS=1

WORKDIR /app

# Dependencies first, in a layer of their own: it is rebuilt only when pyproject.toml
# changes, not on every change to the code.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the code, installed without touching the dependencies.
COPY README.md config.toml ./
COPY gateway ./gateway
COPY cache ./cache
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --uid 10001 --home-dir /data gateway \
    && mkdir -p /data/cache && chown -R gateway /data

USER gateway
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"
# Inside the container the gateway listens on all interfaces so the published port works.
# The worker count comes from STABILITY_GATEWAY_WORKERS; without STABILITY_API_KEY the
# first log line is a WARNING that the gateway runs offline (placeholder images).
CMD ["stability-gateway", "serve", "--config", "/app/config.toml", "--host", "0.0.0.0", "--port", "8080"]
