"""The production path offline: CP -> gateway -> MQTT over mutual TLS (as to AWS IoT's
port 8883) -> processor -> CP, with a certificate made by CreateKeysAndCertificate."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from fakeiot import FakeIot, FakeIotConfig, running_fakeiot
from fakeiot.certs import make_development_pki
from fakeiot.policy import BACKEND_USERNAME
from gateway.app import RunningGateway, run_gateway
from gateway.aws import AwsSettings, make_clients
from gateway.chargepoint import connect, heartbeat
from gateway.config import GatewayConfig
from gateway.errors import MqttConnectError
from gateway.mqtt_link import MqttSettings, open_mqtt_driver

from .conftest import Spy
from .processes import run
from .test_gateway_loop import boot


@pytest.fixture
async def tls_iot(tmp_path: Path) -> AsyncIterator[FakeIot]:
    async with running_fakeiot(
        FakeIotConfig(mqtt_port=0, tls_port=0, api_port=0, data_dir=tmp_path / "iot")
    ) as iot:
        yield iot


def _provision_certificate(iot_client: Any, directory: Path) -> tuple[str, Path, Path]:
    created = iot_client.create_keys_and_certificate(setAsActive=True)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    cert.write_text(created["certificatePem"])
    key.write_text(created["keyPair"]["PrivateKey"])
    return created["certificateId"], cert, key


def _tls_context(iot: FakeIot, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(iot.ca_file))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


async def test_cp_to_cpo_loop_over_mutual_tls(
    tls_iot: FakeIot, nursery: trio.Nursery, tmp_path: Path
) -> None:
    iot_client, iot_data = make_clients(AwsSettings(iot_endpoint_url=tls_iot.api_url))
    iot_client.create_thing(thingName="CP1")
    cert_id, cert, key = _provision_certificate(iot_client, tmp_path / "gw")
    config = GatewayConfig(
        port=0,
        iot_endpoint=f"127.0.0.1:{tls_iot.tls_port}",
        ca_file=tls_iot.ca_file,
        cert_file=cert,
        key_file=key,
        iot_api_url=tls_iot.api_url,
        processor=True,
        processor_mqtt_username=BACKEND_USERNAME,
        processor_mqtt_password=tls_iot.backend_password,
    )
    assert tls_iot.broker is not None
    # A backend spy on the plain listener sees the presence event of the TLS connection.
    async with open_mqtt_driver(
        MqttSettings(
            port=tls_iot.mqtt_port, username=BACKEND_USERNAME, password=tls_iot.backend_password
        )
    ) as spy_driver:
        async with spy_driver.link("test:spy") as link:
            await link.subscribe("$aws/events/presence/connected/+", 1)
            await link.subscribe("+/out", 1)
            spy = Spy(link)
            nursery.start_soon(spy.run)
            gateway: RunningGateway = await nursery.start(run_gateway, config)
            async with connect(gateway.url, "CP1") as cp:
                result = await cp.call(*boot())
                assert result["status"] == "Accepted"
                assert "currentTime" in await cp.call(*heartbeat())
            _, event = await spy.wait_for(lambda t, p: t == "$aws/events/presence/connected/CP1")
            assert (
                json.loads(event)["principalIdentifier"] == cert_id
            )  # the gateway's certificate authenticated it
            assert len(spy.on("CP1/out")) == 2
    reported = json.loads(iot_data.get_thing_shadow(thingName="CP1")["payload"].read())["state"][
        "reported"
    ]
    assert reported["ocppProtocol"] == "ocpp2.0.1" and reported["chargingStation"]["model"] == "M1"
    iot_client.close()
    iot_data.close()


async def test_tls_listener_refuses_clients_without_a_valid_certificate(
    tls_iot: FakeIot, tmp_path: Path
) -> None:
    iot_client, _ = make_clients(AwsSettings(iot_endpoint_url=tls_iot.api_url))
    cert_id, cert, key = _provision_certificate(iot_client, tmp_path / "gw")
    tls = MqttSettings(port=tls_iot.tls_port or 0, connect_timeout=5)
    # No client certificate: the TLS handshake fails.
    async with open_mqtt_driver(replace(tls, ssl_context=_tls_context(tls_iot))) as driver:
        with pytest.raises(MqttConnectError):
            async with driver.link("CP1"):
                pass
    # A certificate from another CA (not fakeiot's): refused.
    other = make_development_pki(tmp_path / "other", clients=("CP1",))["CP1"]
    async with open_mqtt_driver(
        replace(tls, ssl_context=_tls_context(tls_iot, other.cert, other.key))
    ) as driver:
        with pytest.raises(MqttConnectError):
            async with driver.link("CP1"):
                pass
    # The provisioned certificate works while ACTIVE, and is refused once INACTIVE.
    async with open_mqtt_driver(
        replace(tls, ssl_context=_tls_context(tls_iot, cert, key))
    ) as driver:
        async with driver.link("CP1") as link:
            await link.subscribe("CP1/out", 1)
        iot_client.update_certificate(certificateId=cert_id, newStatus="INACTIVE")
        with pytest.raises(MqttConnectError, match="(?i)not authori[sz]ed"):
            async with driver.link("CP1"):
                pass
    iot_client.close()


def test_gateway_cli_validates_the_aws_options(tmp_path: Path) -> None:
    missing = run("-m", "gateway", "--iot-endpoint", "abc.iot.eu-west-1.amazonaws.com")
    assert (
        missing.returncode == 2
        and "--iot-endpoint needs --cert-file and --key-file" in missing.stderr
    )
    both = run("-m", "gateway", "--iot-endpoint", "h", "--mqtt-host", "h")
    assert both.returncode == 2 and "alternatives" in both.stderr
    absent = run(
        "-m",
        "gateway",
        "--iot-endpoint",
        "h",
        "--cert-file",
        str(tmp_path / "c"),
        "--key-file",
        str(tmp_path / "k"),
    )
    assert absent.returncode == 2 and f"no such file: {tmp_path / 'c'}" in absent.stderr
    bad_port = run(
        "-m", "gateway", "--iot-endpoint", "h:99999", "--cert-file", "x", "--key-file", "y"
    )
    assert bad_port.returncode == 2 and "HOST[:PORT]" in bad_port.stderr
    stray = run("-m", "gateway", "--mqtt-host", "h", "--cert-file", "x", "--key-file", "y")
    assert stray.returncode == 2 and "are for --iot-endpoint" in stray.stderr
