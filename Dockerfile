# The OCPP gateway as a container: the product only.  Set GATEWAY_IOT_ENDPOINT,
# GATEWAY_CERT_FILE, GATEWAY_KEY_FILE, GATEWAY_CA_FILE and GATEWAY_REGION (and
# mount the certificate files), or GATEWAY_MQTT_HOST for a plain MQTT broker.
# Without a broker it refuses to start (GATEWAY_REQUIRE_BROKER=1): the development
# stack (fakeiot, amqtt) is not installed here.  See docs/deploying.md and
# docs/configuration.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_METRICS_PORT=9100 \
    GATEWAY_REQUIRE_BROKER=1

RUN useradd --create-home --uid 10001 gateway
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY gateway ./gateway
COPY iotshared ./iotshared
# No extras: amqtt and fakeiot are development tools, not part of the product.
RUN pip install . && rm -rf /app/build

USER gateway
EXPOSE 8080
# /metrics, /healthz and /readyz (docs/operations.md) on 127.0.0.1:9100: set
# GATEWAY_METRICS_HOST=0.0.0.0 where a load balancer or Prometheus must reach them (a
# private network only: they are not authenticated).
EXPOSE 9100
# GET /healthz on the metrics port (liveness), configured by the same GATEWAY_* variables as
# the gateway (without a metrics port: a WebSocket upgrade to the gateway itself).
HEALTHCHECK --interval=15s --timeout=7s --start-period=20s --retries=3 CMD ["python", "-m", "gateway.healthcheck"]
# SIGTERM closes every CP with 1001 and disconnects MQTT cleanly before exiting.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "gateway"]
