"""The loop against Mosquitto (Debian's package): the gateway does not depend on amqtt's quirks.

Mosquitto carries MQTT; fakeiot still provides the registry and shadow API.
Skipped when mosquitto is not installed, unless REQUIRE_MOSQUITTO=1 (CI sets it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
from .waiting import until

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


# An MQTT 3.1.1 CONNECT (client id "probe", clean session): a broker answers it with a CONNACK.
PROBE_CONNECT = b"\x10\x11\x00\x04MQTT\x04\x02\x00\x3c\x00\x05probe"


@asynccontextmanager
async def running_mosquitto(directory: Path, settings: str) -> AsyncIterator[int]:
    """Mosquitto on 127.0.0.1 with these ``settings``; yields its port.

    Mosquitto cannot listen on port 0 and report the port: it is given a free one, which another
    program may take first; it is then started again on another (3 tries)."""
    assert MOSQUITTO is not None
    for _ in range(3):
        port = free_port()
        config = directory / "mosquitto.conf"
        config.write_text(f"listener {port} 127.0.0.1\n{settings}")
        proc = await trio.lowlevel.open_process(
            [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            if await _answers_mqtt(proc, port):
                yield port
                return
        finally:
            proc.terminate()
            with trio.move_on_after(5):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    raise AssertionError("Mosquitto found no free port to listen on in 3 tries")


async def _answers_mqtt(proc: trio.Process, port: int) -> bool:
    """True once Mosquitto answers on ``port``; False if it exited (its port was taken)."""
    with trio.fail_after(10):
        while proc.poll() is None:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                # Another process: nothing tells this one when it listens; poll for it.
                await trio.sleep(0.05)
                continue
            async with stream:
                await stream.send_all(PROBE_CONNECT)
                reply = await stream.receive_some(4)
            return reply == b"\x20\x02\x00\x00" and proc.poll() is None
    return False


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[int]:
    # Queue limits as a production broker for a backend needs them: never drop silently.
    async with running_mosquitto(
        tmp_path,
        "allow_anonymous true\npersistence false\nmax_queued_messages 0\n"
        "max_inflight_messages 0\nset_tcp_nodelay true\nlog_dest stderr\n",
    ) as port:
        yield port


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
            # The first gateway let go of CP16's MQTT link: no reconnect can take the id back.
            await until(lambda: first.driver.link_count == 0, what="the first gateway's link gone")
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
