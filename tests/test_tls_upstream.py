"""``--tls-terminated-upstream``: the gateway behind a load balancer that terminates TLS.

The proxy here is a real one in miniature: it accepts wss:// with fakeiot's development server
certificate and forwards the decrypted bytes to the gateway's plain ws:// port.  The gateway
then counts those connections as TLS for security profile 2 (password over TLS); it cannot see
client certificates through the proxy, so profile 3 is still refused, with a reason that says so.
(A CP reaching the plain port directly would be trusted alike: that port must be reachable only
through the balancer.)
"""

from __future__ import annotations

import ssl
from functools import partial
from typing import Any

import pytest
import trio

from fakeiot import FakeIot
from fakeiot.certs import make_development_pki
from gateway.app import RunningGateway, run_gateway
from gateway.chargepoint import connect, heartbeat
from gateway.credentials import hash_password

from .conftest import gateway_config
from .test_gateway_loop import closed_with

PASSWORD = "behind-the-balancer-1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_development_pki(tmp_path_factory.mktemp("pki"), clients=("CP3",))


async def _pipe(source: trio.abc.Stream, sink: trio.abc.Stream, done: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()  # either side ended: the proxied connection ends


async def _forward(upstream_port: int, client: trio.abc.Stream) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", upstream_port) as upstream:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pipe, client, upstream, nursery.cancel_scope)
            nursery.start_soon(_pipe, upstream, client, nursery.cancel_scope)


async def tls_proxy(nursery: trio.Nursery, pki: dict[str, Any], upstream_port: int) -> str:
    """Start a TLS-terminating TCP proxy to ``upstream_port``; its wss:// base URL."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pki["server"].cert), str(pki["server"].key))
    listeners = await nursery.start(
        partial(
            trio.serve_ssl_over_tcp,
            partial(_forward, upstream_port),
            0,
            context,
            host="127.0.0.1",
            https_compatible=True,
        )
    )
    port = listeners[0].transport_listener.socket.getsockname()[1]
    return f"wss://127.0.0.1:{port}"


async def test_profile_2_through_a_tls_terminating_proxy(
    fakeiot: FakeIot, nursery: trio.Nursery, aws: Any, pki: dict[str, Any]
) -> None:
    for thing, profile in (("CP2", "2"), ("CP3", "3")):
        aws[0].create_thing(
            thingName=thing,
            attributePayload={
                "attributes": {
                    "ocppPasswordHash": hash_password(PASSWORD),
                    "ocppSecurityProfile": profile,
                    "ocppSerialNumber": thing,
                }
            },
        )
    gateway: RunningGateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, tls_terminated_upstream=True)
    )
    assert gateway.url.startswith("ws://")  # the gateway itself serves plain WebSockets
    url = await tls_proxy(nursery, pki, gateway.port)
    client = ssl.create_default_context(cafile=str(pki["ca"].cert))
    with trio.fail_after(20):
        async with connect(url, "CP2", password=PASSWORD, ssl_context=client) as cp:
            assert "currentTime" in await cp.call(*heartbeat())
        # Profile 3 needs the client certificate, which only a gateway terminating TLS sees.
        client.load_cert_chain(str(pki["CP3"].cert), str(pki["CP3"].key))
        async with connect(url, "CP3", password=PASSWORD, ssl_context=client) as cp:
            code, reason = await closed_with(cp.ws)
            assert (code, reason) == (
                1008,
                "Charge Point CP3 uses security profile 3, not served by this gateway",
            )
