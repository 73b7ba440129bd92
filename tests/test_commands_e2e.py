"""Commands to charge points end to end: HTTP API / CLI -> MQTT -> gateway -> a real CP WebSocket.

The CP is a trio-websocket client that answers the CSMS's CALLs with frames built by the
``ocpp`` package (CallResult / CallError), recording every frame it receives and how many of
the CSMS's CALLs it had unanswered at once.
"""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from ocpp.messages import CallError, CallResult
from trio_websocket import ConnectionClosed, WebSocketConnection

from fakeiot import FakeIot
from fakeiot.policy import BACKEND_USERNAME
from gateway.app import RunningGateway
from gateway.chargepoint import open_client_websocket
from gateway.mqtt_link import MqttDriver
from gateway.processor.command_http import serve_command_api
from gateway.processor.command_service import CommandService, CommandSettings

from .conftest import shadow_of
from .waiting import until

Behaviour = Callable[[str, dict[str, Any]], Awaitable[str | None]]


class FakeChargePoint:
    """Answers each CALL from the CSMS with ``behaviour(action, payload)`` (a frame, or None: never)."""

    def __init__(self, ws: WebSocketConnection, behaviour: Behaviour) -> None:
        self.ws = ws
        self.behaviour = behaviour
        self.received: list[list[Any]] = []
        self.outstanding = 0
        self.max_outstanding = 0

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    frame = json.loads(await self.ws.get_message())
                except ConnectionClosed:
                    return
                self.received.append(frame)
                if frame[0] == 2:
                    self.outstanding += 1
                    self.max_outstanding = max(self.max_outstanding, self.outstanding)
                    nursery.start_soon(self._answer, frame)

    async def _answer(self, frame: list[Any]) -> None:
        _, message_id, action, payload = frame
        answer = await self.behaviour(action, payload)
        if answer is None:
            return  # never answered: stays outstanding
        self.outstanding -= 1
        await self.ws.send_message(answer.replace("$ID", message_id))

    def calls(self) -> list[list[Any]]:
        return [f for f in self.received if f[0] == 2]


async def accept(action: str, payload: dict[str, Any]) -> str | None:
    return CallResult("$ID", {"status": "Accepted"}).to_json()  # type: ignore[no-any-return]


@asynccontextmanager
async def charge_point(
    gateway: RunningGateway, aws: Any, cp_id: str, behaviour: Behaviour = accept
) -> AsyncIterator[FakeChargePoint]:
    async with (
        open_client_websocket(f"{gateway.url}/{cp_id}", subprotocols=["ocpp2.0.1"]) as ws,
        trio.open_nursery() as nursery,
    ):
        cp = FakeChargePoint(ws, behaviour)
        nursery.start_soon(cp.run)

        def recorded() -> bool:
            try:
                return shadow_of(aws, cp_id)["state"]["reported"].get("ocppProtocol") == "ocpp2.0.1"
            except Exception:  # noqa: BLE001 - no shadow yet
                return False

        await until(recorded, what="the gateway recorded the CP's protocol")
        yield cp
        nursery.cancel_scope.cancel()


@pytest.fixture
async def api(
    gateway: RunningGateway, mqtt_driver: MqttDriver, aws: Any, nursery: trio.Nursery
) -> tuple[CommandService, int]:
    service = CommandService(
        mqtt_driver,
        aws[0],
        aws[1],
        CommandSettings(client_id="test:cmd", timeout=1.0, max_waiting=1),
    )
    await nursery.start(service.run)
    port = await nursery.start(
        lambda task_status: serve_command_api(
            service, host="127.0.0.1", port=0, task_status=task_status
        )
    )
    return service, port


def _post(port: int, path: str, body: bytes) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


async def post(port: int, cp_id: str, action: str, payload: Any) -> tuple[int, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return await trio.to_thread.run_sync(
        _post, port, f"/charge-points/{cp_id}/calls/{action}", body
    )


async def test_a_command_returns_the_cps_callresult(
    api: tuple[CommandService, int], gateway: RunningGateway, aws: Any, register: Any
) -> None:
    register("CP1")
    async with charge_point(gateway, aws, "CP1") as cp:
        status, body = await post(api[1], "CP1", "Reset", {"type": "Immediate"})
    assert (status, body) == (200, {"status": "Accepted"})
    [call] = cp.calls()
    assert call[2:] == ["Reset", {"type": "Immediate"}]
    assert len(call[1]) == 36  # a uuid4


async def test_a_callerror_is_returned_with_its_code(
    api: tuple[CommandService, int], gateway: RunningGateway, aws: Any, register: Any
) -> None:
    async def refuse(action: str, payload: dict[str, Any]) -> str:
        return CallError("$ID", "NotSupported", "no resets here", {"why": "x"}).to_json()  # type: ignore[no-any-return]

    register("CP1")
    async with charge_point(gateway, aws, "CP1", refuse):
        status, body = await post(api[1], "CP1", "Reset", {"type": "OnIdle"})
    assert status == 502
    assert body == {
        "error": "CallError",
        "code": "NotSupported",
        "description": "no resets here",
        "details": {"why": "x"},
    }


async def test_an_invalid_response_is_reported_with_its_payload(
    api: tuple[CommandService, int], gateway: RunningGateway, aws: Any, register: Any
) -> None:
    async def odd(action: str, payload: dict[str, Any]) -> str:
        return CallResult("$ID", {"status": "Maybe"}).to_json()  # type: ignore[no-any-return]

    register("CP1")
    async with charge_point(gateway, aws, "CP1", odd):
        status, body = await post(api[1], "CP1", "Reset", {"type": "OnIdle"})
    assert status == 502 and body["error"] == "InvalidResponse"
    assert body["payload"] == {"status": "Maybe"} and "status" in body["message"]


async def test_an_invalid_request_names_the_field_and_sends_nothing(
    api: tuple[CommandService, int], gateway: RunningGateway, aws: Any, register: Any
) -> None:
    register("CP1")
    async with charge_point(gateway, aws, "CP1") as cp:
        status, body = await post(api[1], "CP1", "Reset", {"type": "Soon"})
        assert status == 400 and body["field"] == "type" and "Soon" in body["message"]
        status, body = await post(api[1], "CP1", "Reset", b"[1, 2")
        assert status == 400 and body["field"] == "payload"
        status, body = await post(api[1], "CP1", "NoSuchAction", {})
        assert status == 400 and body["field"] == "action"
        # The next valid command is the first frame the CP ever receives.
        assert (await post(api[1], "CP1", "Reset", {"type": "OnIdle"}))[0] == 200
        assert [f[2:] for f in cp.received] == [["Reset", {"type": "OnIdle"}]]
    assert api[0].sent == 1


async def test_a_cp_that_never_answers_times_out(
    api: tuple[CommandService, int], gateway: RunningGateway, aws: Any, register: Any
) -> None:
    async def silent(action: str, payload: dict[str, Any]) -> None:
        return None

    register("CP1")
    async with charge_point(gateway, aws, "CP1", silent) as cp:
        with trio.fail_after(5):
            status, body = await post(api[1], "CP1", "Reset", {"type": "OnIdle"})
    assert status == 504 and body["error"] == "Timeout"
    assert len(cp.calls()) == 1


async def test_unknown_and_offline_cps_are_refused_at_once(
    api: tuple[CommandService, int], gateway: RunningGateway, aws: Any, register: Any
) -> None:
    with trio.fail_after(5):
        status, body = await post(api[1], "NOPE", "Reset", {"type": "OnIdle"})
        assert status == 404 and body["error"] == "UnknownChargePoint"
        register("NEVER")
        status, body = await post(api[1], "NEVER", "Reset", {"type": "OnIdle"})
        assert status == 409 and "never connected" in body["message"]
    register("CP1")
    async with charge_point(gateway, aws, "CP1"):
        await until(lambda: api[0].presence.online("CP1") is True)
    await until(lambda: api[0].presence.online("CP1") is False)
    with trio.fail_after(2):
        status, body = await post(api[1], "CP1", "Reset", {"type": "OnIdle"})
    assert status == 409 and body["error"] == "ChargePointOffline"


async def test_commands_queue_one_outstanding_at_a_time_and_a_full_queue_is_refused(
    api: tuple[CommandService, int], gateway: RunningGateway, aws: Any, register: Any
) -> None:
    release = trio.Event()

    async def slow(action: str, payload: dict[str, Any]) -> str:
        await release.wait()
        return CallResult(
            "$ID", {"status": payload["type"] == "OnIdle" and "Scheduled" or "Accepted"}
        ).to_json()  # type: ignore[no-any-return]

    register("CP1")
    results: dict[str, tuple[int, Any]] = {}
    async with charge_point(gateway, aws, "CP1", slow) as cp:
        async with trio.open_nursery() as nursery:

            async def send(name: str, kind: str) -> None:
                results[name] = await post(api[1], "CP1", "Reset", {"type": kind})

            nursery.start_soon(send, "first", "Immediate")
            await until(lambda: len(cp.calls()) == 1)
            nursery.start_soon(send, "second", "OnIdle")
            await until(lambda: api[0]._queues.waiting("CP1") == 2)
            # --command-queue 1: one outstanding, one waiting; a third is refused
            status, body = await post(api[1], "CP1", "Reset", {"type": "Immediate"})
            assert status == 429 and body["error"] == "QueueFull"
            assert len(cp.calls()) == 1
            release.set()
    assert results == {
        "first": (200, {"status": "Accepted"}),
        "second": (200, {"status": "Scheduled"}),
    }
    assert [c[3]["type"] for c in cp.calls()] == ["Immediate", "OnIdle"]
    assert cp.max_outstanding == 1


async def test_the_cli_returns_the_answer_and_refuses_an_invalid_request(
    gateway: RunningGateway, fakeiot: FakeIot, aws: Any, register: Any
) -> None:
    register("CP1")
    options = [
        "--mqtt-port", str(fakeiot.mqtt_port),
        "--mqtt-username", BACKEND_USERNAME,
        "--iot-api-url", fakeiot.api_url,
        "--command-timeout", "5",
    ]  # fmt: skip
    env = {"PROCESSOR_MQTT_PASSWORD": fakeiot.backend_password}

    async def cli(*args: str) -> Any:
        import os

        return await trio.run_process(
            [sys.executable, "-m", "gateway.processor", "call", *args, *options],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, **env},
        )

    async with charge_point(gateway, aws, "CP1") as cp:
        with trio.fail_after(30):
            done = await cli("CP1", "Reset", '{"type":"Immediate"}')
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout) == {"status": "Accepted"}
            bad = await cli("CP1", "Reset", '{"type":"Later"}')
    assert bad.returncode == 2 and b"type" in bad.stderr and b"Traceback" not in bad.stderr
    assert len(cp.calls()) == 1
