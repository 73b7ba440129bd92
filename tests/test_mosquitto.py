"""The loop against Mosquitto (Debian's package): the gateway does not depend on amqtt's quirks.

Mosquitto carries MQTT; fakeiot still provides the registry and shadow API.
Skipped when mosquitto is not installed, unless REQUIRE_MOSQUITTO=1 (CI sets it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from fakeiot import FakeIot
from gateway.app import run_gateway
from gateway.chargepoint import boot_notification, connect, heartbeat

from .conftest import gateway_config, shadow_of
from .processes import free_port
from .test_gateway_loop import closed_with

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
)

pytestmark = pytest.mark.mosquitto
if MOSQUITTO is None:
    if os.environ.get("REQUIRE_MOSQUITTO") == "1":
        raise RuntimeError(
            "REQUIRE_MOSQUITTO=1 but mosquitto is not installed (apt-get install mosquitto)"
        )
    pytestmark = [pytest.mark.mosquitto, pytest.mark.skip(reason="mosquitto is not installed")]


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[int]:
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    # Queue limits as a production broker for a backend needs them: never drop silently.
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nmax_inflight_messages 0\nset_tcp_nodelay true\nlog_dest stderr\n"
    )
    assert MOSQUITTO is not None
    proc = await trio.lowlevel.open_process(
        [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(10):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    await trio.sleep(0.05)
                    continue
                await stream.aclose()
                break
        yield port
    finally:
        proc.terminate()
        with trio.move_on_after(5):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_loop_over_mosquitto_both_versions_and_takeover(
    mosquitto: int, fakeiot: FakeIot, nursery: trio.Nursery, register: Any, aws: Any
) -> None:
    register("CP1", "CP16")
    first = await nursery.start(run_gateway, gateway_config(fakeiot, mqtt_port=mosquitto))
    second = await nursery.start(
        run_gateway, gateway_config(fakeiot, mqtt_port=mosquitto, processor=False)
    )
    # The same view as `mosquitto_sub -t '+/in' -t '+/out' -v`, from the real tool.
    sub = await trio.lowlevel.open_process(
        [
            "stdbuf",
            "-oL",
            "mosquitto_sub",
            "-d",
            "-h",
            "127.0.0.1",
            "-p",
            str(mosquitto),
            "-t",
            "+/in",
            "-t",
            "+/out",
            "-v",
            "-C",
            "4",
            "-W",
            "20",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        await _walkthrough(sub, first, second, aws)
    finally:
        if sub.returncode is None:
            sub.kill()
        await sub.wait()
        assert sub.stdout is not None
        await sub.stdout.aclose()


async def _walkthrough(sub: Any, first: Any, second: Any, aws: Any) -> None:
    assert sub.stdout is not None
    output = b""
    with trio.fail_after(10):
        while b"Subscribed" not in output:  # -d reports the SUBACK: from here on nothing is missed
            output += await sub.stdout.receive_some()
    async with connect(first.url, "CP1") as cp:
        assert (
            await cp.call(
                *boot_notification("2.0.1", vendor="V", model="M", serial="S", firmware="F")
            )
        )["status"] == "Accepted"
        assert "currentTime" in await cp.call(*heartbeat())
    async with connect(first.url, "CP16", subprotocols=["ocpp1.6"]) as cp16:
        boot = await cp16.call(
            *boot_notification("1.6", vendor="V", model="M16", serial="S", firmware="F")
        )
        assert boot["status"] == "Accepted"
        assert (await cp16.call("Authorize", {"idTag": "T"}))["idTagInfo"]["status"] == "Accepted"
        # Mosquitto's take-over: a newer connection through the other gateway wins.
        async with connect(second.url, "CP16", subprotocols=["ocpp1.6"]) as newer:
            code, reason = await closed_with(cp16.ws)
            assert code == 1000 and reason.startswith("MQTT session ended")
            await trio.sleep(1.5)
            assert "currentTime" in await newer.call(*heartbeat())
    with trio.fail_after(20):
        while True:
            chunk = await sub.stdout.receive_some()
            if not chunk:
                break
            output += chunk
    await sub.wait()
    lines = [line for line in output.decode().splitlines() if line.startswith("CP")]
    assert [line.split(" ", 1)[0] for line in lines] == ["CP1/in", "CP1/out", "CP1/in", "CP1/out"]
    assert '"BootNotification"' in lines[0]
    assert shadow_of(aws, "CP16")["state"]["reported"]["chargingStation"]["model"] == "M16"
