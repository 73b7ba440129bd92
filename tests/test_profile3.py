"""OCPP security profile 3: client certificates that chain to the CPO's CA, name the CPO in O,
carry the registered serial in CN, and are bound to the CP id of the URL; and --min-security-profile."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import trio

from fakeiot import FakeIot
from fakeiot.certs import CertificateAuthority, Issued, make_development_pki
from gateway.app import RunningGateway, run_gateway
from gateway.chargepoint import connect, heartbeat
from gateway.credentials import hash_password

from .conftest import gateway_config
from .test_gateway_loop import closed_with

CPO = "ACME Charging"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("pki3")
    issued: dict[str, Any] = dict(
        make_development_pki(directory)
    )  # server certificate for the gateway
    cp_ca = CertificateAuthority("ACME charge point CA", CPO)
    issued["cp_ca"] = cp_ca.save(directory, "cp-ca")
    issued["CP3"] = cp_ca.issue(directory, "cp3", "CP3", organization=CPO)  # CN = id = serial
    issued["CP3-san"] = cp_ca.issue(
        directory, "cp3-san", "SN-0003", organization=CPO, dns_names=("CP3",)
    )
    issued["CP4"] = cp_ca.issue(
        directory, "cp4", "CP4", organization=CPO
    )  # valid, but another CP's
    issued["other-o"] = cp_ca.issue(directory, "other-o", "CP3", organization="Someone Else")
    rogue = CertificateAuthority("rogue CA", CPO)
    issued["rogue"] = rogue.issue(directory, "rogue", "CP3", organization=CPO)
    return issued


def _client(pki: dict[str, Any], cert: Issued | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"].cert))
    if cert is not None:
        context.load_cert_chain(str(cert.cert), str(cert.key))
    return context


async def _raw_upgrade(port: int, context: ssl.SSLContext) -> bytes:
    """Send a WebSocket upgrade over TLS; return what the server answers before it closes."""
    stream = await trio.open_ssl_over_tcp_stream(
        "127.0.0.1", port, ssl_context=context, https_compatible=True
    )
    received = b""
    try:
        with trio.fail_after(10):
            await stream.send_all(
                b"GET /CP3 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            while chunk := await stream.receive_some(4096):
                received += chunk
    except trio.BrokenResourceError:
        pass
    finally:
        await trio.aclose_forcefully(stream)  # on every path, a failed test's too
    return received


async def test_profile_3_client_certificates(
    fakeiot: FakeIot, nursery: trio.Nursery, aws: Any, pki: dict[str, Any]
) -> None:
    for cp_id, serial in (("CP3", "CP3"), ("CP4", "CP4")):
        aws[0].create_thing(
            thingName=cp_id,
            attributePayload={
                "attributes": {"ocppSecurityProfile": "3", "ocppSerialNumber": serial}
            },
        )
    gateway: RunningGateway = await nursery.start(
        run_gateway,
        gateway_config(
            fakeiot,
            certfile=pki["server"].cert,
            keyfile=pki["server"].key,
            client_ca_file=pki["cp_ca"].cert,
            cpo_name=CPO,
            handshake_timeout=2.0,
        ),
    )
    with trio.fail_after(20):
        async with connect(gateway.url, "CP3", ssl_context=_client(pki, pki["CP3"])) as cp:
            assert "currentTime" in await cp.call(*heartbeat())
        refusals = {
            None: "Charge Point CP3 uses security profile 3: a TLS client certificate is required",
            "CP4": "Charge Point CP3: no CN or SAN of the client certificate equals the id",
            "other-o": "Charge Point CP3: client certificate O does not contain the CPO name",
        }
        for name, reason in refusals.items():
            async with connect(
                gateway.url, "CP3", ssl_context=_client(pki, pki[name] if name else None)
            ) as cp:
                assert await closed_with(cp.ws) == (1008, reason), name
        # A certificate from a CA the gateway does not trust fails the server's side of the TLS handshake:
        # no upgrade answer, and the connection is closed by the handshake timeout (2 s here).
        assert await _raw_upgrade(gateway.port, _client(pki, pki["rogue"])) == b""
        # Binding by SAN: CN is the serial number, a DNS SAN is the id.
        aws[0].update_thing(
            thingName="CP3",
            attributePayload={"attributes": {"ocppSerialNumber": "SN-0003"}, "merge": True},
        )
        gateway.bridge.registry.forget("CP3")
        async with connect(gateway.url, "CP3", ssl_context=_client(pki, pki["CP3-san"])) as cp:
            assert "currentTime" in await cp.call(*heartbeat())
        async with connect(
            gateway.url, "CP3", ssl_context=_client(pki, pki["CP3"])
        ) as cp:  # CN lacks the new serial
            assert await closed_with(cp.ws) == (
                1008,
                "Charge Point CP3: client certificate CN does not contain its serial number",
            )


async def test_profile_3_is_refused_where_the_gateway_cannot_see_certificates(
    fakeiot: FakeIot, gateway: RunningGateway, aws: Any
) -> None:
    aws[0].create_thing(
        thingName="CP3",
        attributePayload={"attributes": {"ocppSecurityProfile": "3", "ocppSerialNumber": "CP3"}},
    )
    async with connect(gateway.url, "CP3") as cp:
        assert await closed_with(cp.ws) == (
            1008,
            "Charge Point CP3 uses security profile 3: connect with wss:// (TLS)",
        )


async def test_min_security_profile_requires_a_password_of_every_cp(
    fakeiot: FakeIot, nursery: trio.Nursery, aws: Any
) -> None:
    aws[0].create_thing(thingName="OPEN1")
    aws[0].create_thing(
        thingName="LOCKED1",
        attributePayload={"attributes": {"ocppPasswordHash": hash_password("a-sixteen-char-pw")}},
    )
    aws[0].create_thing(
        thingName="TYPO1", attributePayload={"attributes": {"ocppSecurityProfile": "one"}}
    )
    strict: RunningGateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, min_security_profile=1, processor=False)
    )
    async with connect(strict.url, "OPEN1") as cp:
        assert await closed_with(cp.ws) == (
            1008,
            "Charge Point OPEN1: security profile 0 is below this gateway's minimum 1",
        )
    async with connect(strict.url, "TYPO1") as cp:
        code, reason = await closed_with(cp.ws)
        assert code == 1008 and "invalid ocppSecurityProfile 'one'" in reason
    async with connect(strict.url, "LOCKED1", password="a-sixteen-char-pw") as cp:
        await cp.ws.send_message(
            '[2,"1","Heartbeat",{}]'
        )  # accepted: no processor here, so no answer expected
        assert not cp.ws.closed


def test_profile_3_options_are_checked(tmp_path: Path) -> None:
    from .processes import run

    lonely = run("-m", "gateway", "--client-ca-file", str(tmp_path / "ca.pem"))
    assert (
        lonely.returncode == 2
        and "needs --certfile/--keyfile (wss://) and --cpo-name" in lonely.stderr
    )
