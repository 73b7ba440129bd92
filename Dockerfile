# The OCPP gateway as a container.  Production: set GATEWAY_IOT_ENDPOINT,
# GATEWAY_CERT_FILE, GATEWAY_KEY_FILE, GATEWAY_CA_FILE and GATEWAY_REGION (and
# mount the certificate files); without GATEWAY_IOT_ENDPOINT it runs the embedded
# fakeiot, for trying it out.  See docs/deploying.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080

RUN useradd --create-home --uid 10001 gateway
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY gateway ./gateway
COPY fakeiot ./fakeiot
RUN pip install . && rm -rf /app/build

USER gateway
EXPOSE 8080
# A WebSocket upgrade to the gateway itself (answered with 1008, no MQTT, no registry call).
HEALTHCHECK --interval=15s --timeout=7s --start-period=20s --retries=3 CMD ["python", "-m", "gateway.healthcheck"]
# SIGTERM closes every CP with 1001 and disconnects MQTT cleanly before exiting.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "gateway"]
