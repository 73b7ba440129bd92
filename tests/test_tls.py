"""wss:// served by the gateway (OCPP security profile 2) with fakeiot's development certificates."""

from __future__ import annotations

import ssl
import warnings
from pathlib import Path
from typing import Any

import pytest
import trio

from fakeiot import FakeIot
from fakeiot.certs import make_development_pki
from gateway.app import RunningGateway, run_gateway
from gateway.chargepoint import connect, heartbeat
from gateway.credentials import hash_password

from .conftest import gateway_config
from .processes import run
from .test_gateway_loop import closed_with

PASSWORD = "profile-two-password-1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_development_pki(tmp_path_factory.mktemp("pki"), clients=("CP1",))


def client_context(pki: dict[str, Any]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki["ca"].cert))


def test_certs_cli_writes_a_verifiable_chain(tmp_path: Path) -> None:
    result = run("-m", "fakeiot", "certs", "--out", str(tmp_path), "--client", "CP1")
    assert result.returncode == 0, result.stderr
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(str(tmp_path / "server.pem"), str(tmp_path / "server.key"))
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    client.load_cert_chain(str(tmp_path / "client-CP1.pem"), str(tmp_path / "client-CP1.key"))
    assert oct((tmp_path / "ca.key").stat().st_mode & 0o777) == "0o600"


async def test_wss_profile_2(
    fakeiot: FakeIot, nursery: trio.Nursery, aws: Any, pki: dict[str, Any]
) -> None:
    aws[0].create_thing(
        thingName="CP1",
        attributePayload={
            "attributes": {"ocppPasswordHash": hash_password(PASSWORD), "ocppSecurityProfile": "2"}
        },
    )
    secure: RunningGateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, certfile=pki["server"].cert, keyfile=pki["server"].key)
    )
    plain: RunningGateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, processor=False)
    )
    assert secure.url.startswith("wss://127.0.0.1:")
    with trio.fail_after(10):
        await _profile_2_steps(secure, plain, pki)


async def _profile_2_steps(
    secure: RunningGateway, plain: RunningGateway, pki: dict[str, Any]
) -> None:
    async with connect(secure.url, "CP1", password=PASSWORD, ssl_context=client_context(pki)) as cp:
        assert "currentTime" in await cp.call(*heartbeat())
    async with connect(plain.url, "CP1", password=PASSWORD) as cp:
        assert await closed_with(cp.ws) == (
            1008,
            "Charge Point CP1 uses security profile 2: connect with wss:// (TLS)",
        )
    with pytest.raises(trio.BrokenResourceError) as untrusted:
        async with connect(
            secure.url, "CP1", password=PASSWORD, ssl_context=ssl.create_default_context()
        ):
            pass
    assert isinstance(untrusted.value.__cause__, ssl.SSLCertVerificationError)
    old_tls = client_context(pki)
    with warnings.catch_warnings():  # Python deprecates asking for TLS 1.1, which is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        old_tls.minimum_version = ssl.TLSVersion.TLSv1
        old_tls.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(trio.BrokenResourceError) as too_old:  # the gateway speaks TLS 1.2+ only
        async with connect(secure.url, "CP1", password=PASSWORD, ssl_context=old_tls):
            pass
    assert isinstance(too_old.value.__cause__, ssl.SSLError)
    # The gateway survived the failed handshakes.
    async with connect(secure.url, "CP1", password=PASSWORD, ssl_context=client_context(pki)) as cp:
        assert "currentTime" in await cp.call(*heartbeat())


def test_missing_key_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run(
        "-m",
        "gateway",
        "--certfile",
        str(tmp_path / "nope.pem"),
        "--keyfile",
        str(tmp_path / "nope.key"),
    )
    assert result.returncode == 2 and "no such file" in result.stderr
    lonely = run("-m", "gateway", "--certfile", str(tmp_path / "x.pem"))
    assert lonely.returncode == 2 and "--certfile and --keyfile go together" in lonely.stderr
