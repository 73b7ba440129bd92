"""``python -m gateway.healthcheck``: exit 0 if the gateway is alive.

For container health checks (the Dockerfile's ``HEALTHCHECK``, the ECS task's).  It
reads the gateway's own configuration (the same flags and ``GATEWAY_*`` variables, see
gateway/config.py):

* with ``--metrics-port`` (the container image sets it), it asks ``GET /healthz`` on that
  port of the loopback interface: 200 while the gateway's event loop answers (liveness;
  readiness, ``/readyz``, is for the load balancer: see docs/operations.md);
* without, it opens a WebSocket to ``<base-path>/`` on the gateway's port, ws:// or wss://
  as the gateway serves: a gateway that is serving answers the upgrade and then closes with
  1008 (an empty charge point id is not valid), without touching MQTT or the registry.

Anything else - refused, timed out, a bad configuration - exits 1.

With ``--workers N`` every worker answers on the shared port: the probe reaches
the one the kernel picks for its connection.
"""

from __future__ import annotations

import http.client
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket

from .config import GatewayConfig, parse_config
from .errors import CLOSE_POLICY_VIOLATION, ConfigError

TIMEOUT_S = 5.0
# Where a gateway bound to every address is reached from inside its own container.
LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True)
class Probe:
    host: str
    port: int
    path: str
    ssl_context: ssl.SSLContext | None


def liveness_ssl_context() -> ssl.SSLContext:
    """TLS without verifying the certificate: this checks that the local process answers.

    The gateway's certificate names its public host, not 127.0.0.1, and may be signed by a
    private CA: verifying it here would report a healthy gateway as unhealthy.  Nothing is
    sent that needs protecting and no one is authenticated: it is a liveness check of a
    process on this machine, not a connection to trust.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def probe_for(config: GatewayConfig) -> Probe:
    server = config.server
    return Probe(
        host=LOOPBACK.get(server.host, server.host),
        port=server.port,
        path=f"{server.base_path}/",
        ssl_context=liveness_ssl_context() if config.tls.direct else None,
    )


async def check(probe: Probe) -> bool:
    with trio.move_on_after(TIMEOUT_S):
        try:
            async with open_websocket(
                probe.host,
                probe.port,
                probe.path,
                use_ssl=probe.ssl_context or False,
                subprotocols=["ocpp2.0.1", "ocpp1.6"],
            ) as ws:
                await ws.get_message()
        except ConnectionClosed as exc:
            return exc.reason is not None and exc.reason.code == CLOSE_POLICY_VIOLATION
        except (HandshakeError, OSError):
            return False
    return False


def alive(host: str, port: int, timeout: float = TIMEOUT_S) -> bool:
    """``GET /healthz`` answered 200 (each socket operation bounded by ``timeout``)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read(1024)
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse_config(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"unhealthy: bad configuration: {exc}")
        return 1
    metrics = config.metrics
    if metrics.port:  # the gateway's own liveness endpoint
        host = LOOPBACK.get(metrics.host, metrics.host)
        where = f"http://{host}:{metrics.port}/healthz"
        healthy = alive(host, metrics.port)
        print("healthy" if healthy else f"unhealthy: {where} did not answer 200")
        return 0 if healthy else 1
    probe = probe_for(config)
    if probe.port == 0:
        print("unhealthy: the gateway is configured with port 0 (any free port): nothing to check")
        return 1
    healthy = trio.run(check, probe)
    scheme = "wss" if probe.ssl_context else "ws"
    where = f"{scheme}://{probe.host}:{probe.port}{probe.path}"
    print("healthy" if healthy else f"unhealthy: no OCPP gateway answering on {where}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
