"""``python -m gateway.healthcheck``: exit 0 if the gateway accepts WebSocket upgrades.

For container health checks (the Dockerfile's ``HEALTHCHECK``).  It opens a
WebSocket to ``/`` on ``GATEWAY_PORT`` (default 8080) of the loopback
interface: a gateway that is serving answers the upgrade and then closes
with 1008 (an empty charge point id is not valid), without touching MQTT or
the registry.  Any other outcome - refused, timed out - exits 1.
"""

from __future__ import annotations

import os
import sys

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket

TIMEOUT_S = 5.0


async def check(host: str, port: int, use_ssl: bool) -> bool:
    with trio.move_on_after(TIMEOUT_S):
        try:
            async with open_websocket(
                host, port, "/", use_ssl=use_ssl, subprotocols=["ocpp2.0.1", "ocpp1.6"]
            ) as ws:
                await ws.get_message()
        except ConnectionClosed as exc:
            return exc.reason is not None and exc.reason.code == 1008
        except (HandshakeError, OSError):
            return False
    return False


def main() -> int:
    port = int(os.environ.get("GATEWAY_PORT") or 8080)
    use_ssl = bool(os.environ.get("GATEWAY_CERTFILE"))
    healthy = trio.run(check, "127.0.0.1", port, use_ssl)
    print("healthy" if healthy else f"unhealthy: no OCPP gateway answering on 127.0.0.1:{port}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
