"""The CPO's side end to end, over real sockets.

A simulated charge point (scripts.simulator) or an ``ocpp``-built one connects through the real
gateway to fakeiot's MQTT broker; the message processor answers it; commands go out through the
command service (in-process, and its HTTP API); a backend MQTT spy on ``<cp>/in`` and ``<cp>/out``
sees what a CPO's backend would see.  Also: authorization against fakeiot's id-token table, and
the development stack's ``--processor-authorization`` / ``--processor-http-port``.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from ocpp.messages import CallResult, validate_payload
from ocpp.v16 import call as v16
from ocpp.v201 import call as v201
from ocpp.v201 import datatypes

from fakeiot import FakeIot
from gateway.app import RunningGateway, embedded_processor_config, run_gateway
from gateway.aws import AwsSettings, make_clients
from gateway.chargepoint import CallErrorReceived, ChargePoint, connect, payload_of
from gateway.config import parse_config
from gateway.config_options import PROCESSOR_AUTHORIZERS, GatewayConfig
from gateway.devstack import RunningDevStack, run_dev_stack
from gateway.errors import ConfigError
from gateway.identity import thing_name_for
from gateway.mqtt_link import MqttDriver
from gateway.processor.command_http import serve_command_api
from gateway.processor.command_service import CommandService, CommandSettings
from gateway.processor.commands import CallAnswered
from gateway.processor.config import AUTHORIZERS, ProcessorConfig
from gateway.processor.idtokens import IdTokenRecord, IdTokenTable, make_dynamodb_client
from scripts.simulator import Simulator, SimulatorConfig

from .conftest import Spy, gateway_config, shadow_of
from .test_console import call, token_of
from .waiting import until

SUBPROTOCOL = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}
Frame = list[Any]


# -- helpers ---------------------------------------------------------------------------


def _frame(payload: bytes) -> Frame | None:
    try:
        frame = json.loads(payload)
    except ValueError:
        return None
    return frame if isinstance(frame, list) and len(frame) >= 3 else None


async def answered_call(
    spy: Spy, cp_id: str, action: str, match: Callable[[dict[str, Any]], bool] = lambda p: True
) -> tuple[dict[str, Any], Frame]:
    """The first CALL ``action`` the CP sent (on ``<cp>/in``) that ``match``es, and the processor's
    answer to it (on ``<cp>/out``), checked against the action's response schema."""

    def is_call(topic: str, payload: bytes) -> bool:
        frame = _frame(payload)
        return (
            topic == f"{cp_id}/in"
            and frame is not None
            and frame[0] == 2
            and frame[2] == action
            and match(frame[3])
        )

    _, sent = await spy.wait_for(is_call, timeout=10)
    call = json.loads(sent)
    message_id = call[1]

    def is_answer(topic: str, payload: bytes) -> bool:
        frame = _frame(payload)
        return (
            topic == f"{cp_id}/out"
            and frame is not None
            and frame[0] in (3, 4)
            and frame[1] == message_id
        )

    _, text = await spy.wait_for(is_answer, timeout=10)
    answer: Frame = json.loads(text)
    assert answer[0] == 3, f"{action} answered {answer}"
    return call[3], answer


async def check_response(version: str, action: str, payload: dict[str, Any]) -> None:
    await validate_payload(CallResult("1", payload, action=action), version)


def _post(port: int, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


async def post(port: int, cp_id: str, action: str, body: dict[str, Any]) -> tuple[int, Any]:
    return await trio.to_thread.run_sync(
        _post, port, f"/charge-points/{cp_id}/calls/{action}", body
    )


async def recorded_protocol(aws: Any, cp_id: str, subprotocol: str) -> None:
    def recorded() -> bool:
        try:
            reported = shadow_of(aws, thing_name_for(cp_id))["state"]["reported"]
        except Exception:  # noqa: BLE001 - no shadow yet
            return False
        return reported.get("ocppProtocol") == subprotocol  # type: ignore[no-any-return]

    await until(recorded, what=f"the gateway recorded {cp_id}'s protocol")


def simulator(url: str, cp_id: str, version: str) -> Simulator:
    return Simulator(
        SimulatorConfig(
            url=url,
            cp_id=cp_id,
            version=version,
            meter_interval=0.2,
            call_timeout=5,
            log_frames=False,
        )
    )


@pytest.fixture
async def commands(
    gateway: RunningGateway, mqtt_driver: MqttDriver, aws: Any, nursery: trio.Nursery
) -> tuple[CommandService, int]:
    """The command service in this process, and its HTTP API on a free port."""
    service = CommandService(
        mqtt_driver, aws[0], aws[1], CommandSettings(client_id="test:cmd", timeout=5.0)
    )
    await nursery.start(service.run)
    port = await nursery.start(
        lambda task_status: serve_command_api(
            service, host="127.0.0.1", port=0, task_status=task_status
        )
    )
    return service, port


async def command(service: CommandService, cp_id: str, action: str, payload: Any) -> Any:
    outcome = await service.call(cp_id, action, payload)
    assert isinstance(outcome, CallAnswered), outcome
    return outcome.payload


# -- 1. a remote start and stop, simulator <-> gateway <-> processor ----------------------


@pytest.mark.parametrize("version", ["2.0.1", "1.6"])
async def test_remote_start_and_stop_through_the_whole_stack(
    version: str,
    gateway: RunningGateway,
    commands: tuple[CommandService, int],
    spy: Spy,
    aws: Any,
    register: Callable[..., None],
    nursery: trio.Nursery,
) -> None:
    service, http_port = commands
    cp_id = f"SIM-{version}"
    register(cp_id)
    with trio.fail_after(60):
        nursery.start_soon(simulator(gateway.url, cp_id, version).run)
        _, boot = await answered_call(spy, cp_id, "BootNotification")
        assert boot[2]["status"] == "Accepted" and boot[2]["interval"] == 10
        await recorded_protocol(aws, cp_id, SUBPROTOCOL[version])

        if version == "2.0.1":
            token = {"idToken": "TAG-1", "type": "Central"}
            start = {"idToken": token, "remoteStartId": 7, "evseId": 1}
            # The start through the HTTP API, the stop through the service itself.
            assert await post(http_port, cp_id, "RequestStartTransaction", start) == (
                200,
                {"status": "Accepted"},
            )
            started, answer = await answered_call(
                spy, cp_id, "TransactionEvent", lambda p: p["eventType"] == "Started"
            )
            assert started["idToken"] == token and started["transactionInfo"]["remoteStartId"] == 7
            assert answer[2] == {"idTokenInfo": {"status": "Accepted"}}  # accept-all
            tx_id = started["transactionInfo"]["transactionId"]
            updated, answer = await answered_call(
                spy, cp_id, "TransactionEvent", lambda p: p["eventType"] == "Updated"
            )
            assert updated["transactionInfo"]["transactionId"] == tx_id and answer[2] == {}
            stop = await command(service, cp_id, "RequestStopTransaction", {"transactionId": tx_id})
            assert stop == {"status": "Accepted"}
            ended, answer = await answered_call(
                spy, cp_id, "TransactionEvent", lambda p: p["eventType"] == "Ended"
            )
            assert ended["transactionInfo"] == {"transactionId": tx_id, "stoppedReason": "Remote"}
            await check_response(version, "TransactionEvent", answer[2])
        else:
            assert await post(http_port, cp_id, "RemoteStartTransaction", {"idTag": "TAG-1"}) == (
                200,
                {"status": "Accepted"},
            )
            begun, answer = await answered_call(spy, cp_id, "StartTransaction")
            assert begun["idTag"] == "TAG-1" and begun["connectorId"] == 1
            await check_response(version, "StartTransaction", answer[2])
            assert answer[2]["idTagInfo"] == {"status": "Accepted"}
            tx_id = answer[2]["transactionId"]  # the processor's
            metered, answer = await answered_call(
                spy, cp_id, "MeterValues", lambda p: p.get("transactionId") == tx_id
            )
            assert answer[2] == {}
            stop = await command(service, cp_id, "RemoteStopTransaction", {"transactionId": tx_id})
            assert stop == {"status": "Accepted"}
            stopped, answer = await answered_call(spy, cp_id, "StopTransaction")
            assert stopped["transactionId"] == tx_id and stopped["reason"] == "Remote"
            await check_response(version, "StopTransaction", answer[2])
    assert service.sent == 2  # the start (HTTP API) and the stop went through one service


# -- 2. authorization against fakeiot's id-token table -------------------------------------


NOW = datetime.now(UTC).replace(microsecond=0)
TOKENS = [
    IdTokenRecord("ACC", "Accepted", NOW + timedelta(days=30), "FLEET"),
    IdTokenRecord("BLK", "Blocked"),
    IdTokenRecord("EXP", "Expired"),
    IdTokenRecord("OLD", "Accepted", NOW - timedelta(minutes=5)),  # past its expiry date
    IdTokenRecord("INV", "Invalid"),
]
# token -> (1.6 idTagInfo.status, 2.0.1 idTokenInfo.status); NOPE is in no table
EXPECTED = {
    "ACC": ("Accepted", "Accepted"),
    "BLK": ("Blocked", "Blocked"),
    "EXP": ("Expired", "Expired"),
    "OLD": ("Expired", "Expired"),
    "INV": ("Invalid", "Invalid"),
    "NOPE": ("Invalid", "Unknown"),
}


def put_tokens(api_url: str, records: list[IdTokenRecord], name: str = "ocppIdTokens") -> None:
    client = make_dynamodb_client("us-east-1", api_url)
    try:
        table = IdTokenTable(client, name)
        table.create()
        for record in records:
            table.put(record)
    finally:
        client.close()


async def authorize(cp: ChargePoint, token: str) -> dict[str, Any]:
    """The idTagInfo / idTokenInfo the CSMS answers to an ``ocpp``-built Authorize."""
    if cp.version == "1.6":
        answer = await cp.call("Authorize", payload_of(v16.Authorize(id_tag=token)), timeout=15)
        await check_response("1.6", "Authorize", answer)
        return answer["idTagInfo"]  # type: ignore[no-any-return]
    request = v201.Authorize(id_token=datatypes.IdTokenType(id_token=token, type="ISO14443"))
    answer = await cp.call("Authorize", payload_of(request), timeout=15)
    await check_response("2.0.1", "Authorize", answer)
    return answer["idTokenInfo"]  # type: ignore[no-any-return]


class Proxy:
    """A TCP relay to ``port`` that can be cut: the store becomes unreachable (connections reset,
    new ones refused) while fakeiot's broker runs on."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.scope = trio.CancelScope()
        self.closed = trio.Event()

    async def _relay(self, client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream("127.0.0.1", self.target) as upstream:
            async with trio.open_nursery() as nursery:

                async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
                    try:
                        while data := await source.receive_some(65536):
                            await sink.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(pump, client, upstream)
                nursery.start_soon(pump, upstream, client)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self.scope:
                listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
                task_status.started(int(listeners[0].socket.getsockname()[1]))
                await trio.serve_listeners(self._relay, listeners)
        finally:
            self.closed.set()

    async def cut(self) -> None:
        self.scope.cancel()
        await self.closed.wait()


async def test_authorize_answers_from_the_table_and_survives_an_unreachable_store(
    fakeiot: FakeIot, register: Callable[..., None], nursery: trio.Nursery
) -> None:
    put_tokens(fakeiot.api_url, TOKENS)
    proxy = Proxy(int(fakeiot.api_url.rsplit(":", 1)[1]))
    proxy_port = await nursery.start(proxy.run)
    # The gateway's processor reads the table (and the registry) through the proxy.
    config = gateway_config(
        fakeiot,
        iot_api_url=f"http://127.0.0.1:{proxy_port}",
        processor_authorization="id-token-table",
    )
    gateway: RunningGateway = await nursery.start(run_gateway, config)
    register("AUTH16", "AUTH201")
    with trio.fail_after(60):
        async with (
            connect(gateway.url, "AUTH16", subprotocols=["ocpp1.6"]) as cp16,
            connect(gateway.url, "AUTH201", subprotocols=["ocpp2.0.1"]) as cp201,
        ):
            for token, (status16, status201) in EXPECTED.items():
                info16, info201 = await authorize(cp16, token), await authorize(cp201, token)
                assert (info16["status"], info201["status"]) == (status16, status201), token
            accepted16, accepted201 = await authorize(cp16, "ACC"), await authorize(cp201, "ACC")
            assert accepted16["parentIdTag"] == "FLEET"
            assert accepted201["groupIdToken"] == {"idToken": "FLEET", "type": "Central"}
            assert datetime.fromisoformat(accepted16["expiryDate"]) == NOW + timedelta(days=30)

            await proxy.cut()
            for cp in (cp16, cp201):
                with pytest.raises(CallErrorReceived) as refused:
                    await authorize(cp, "FRESH")  # not cached: the store must be asked
                assert refused.value.code == "InternalError"
                # The next CALLs are answered: a Heartbeat, and a token answered before (cached).
                assert "currentTime" in await cp.call("Heartbeat", {}, timeout=15)
                assert (await authorize(cp, "BLK"))["status"] == "Blocked"


# -- 3. the development stack's processor options --------------------------------------------


def test_the_gateways_authorization_options_match_the_processors() -> None:
    assert PROCESSOR_AUTHORIZERS == AUTHORIZERS
    assert GatewayConfig.processor_id_token_table == ProcessorConfig.id_token_table
    config = parse_config(
        [
            "--processor",
            "--processor-authorization",
            "id-token-table",
            "--processor-id-token-table",
            "cpoTokens",
        ],  # fmt: skip
        {"GATEWAY_PROCESSOR_HTTP_PORT": "0", "GATEWAY_IOT_API_URL": "http://127.0.0.1:9"},
    )
    processor = embedded_processor_config(config)
    assert (processor.authorization, processor.id_token_table) == ("id-token-table", "cpoTokens")
    assert (processor.http_port, processor.iot_api_url) == (0, "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="DynamoDB table name"):
        parse_config(["--processor-id-token-table", "x"], {})
    with pytest.raises(ConfigError, match="must be one of"):
        parse_config(["--processor-authorization", "allow-everyone"], {})
    # Without the in-process processor the options would do nothing: refused.
    for flag, value in (
        ("--processor-http-port", "0"),
        ("--processor-authorization", "id-token-table"),
    ):
        no_processor = parse_config(["--mqtt-host", "127.0.0.1", flag, value], {})
        with pytest.raises(ConfigError, match="give --processor"):
            embedded_processor_config(no_processor)


@asynccontextmanager
async def dev_stack(tmp_path: Path, *flags: str) -> AsyncIterator[RunningDevStack]:
    config = parse_config(
        [
            "--port",
            "0",
            "--mqtt-port",
            "0",
            "--fakeiot-api-port",
            "0",
            "--data-dir",
            str(tmp_path / "devstack"),
            *flags,
        ],  # fmt: skip
        {},
    )
    async with trio.open_nursery() as nursery:
        stack: RunningDevStack = await nursery.start(run_dev_stack, config)
        yield stack
        nursery.cancel_scope.cancel()


async def test_dev_stack_authorizes_from_its_table_and_serves_the_command_api(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with dev_stack(
            tmp_path,
            "--processor-authorization", "id-token-table",
            "--processor-http-port", "0",
        ) as stack:  # fmt: skip
            api_url = stack.fakeiot.api_url
            # The development stack created the (empty) table: a token is Unknown, not an error.
            iot, iot_data = make_clients(AwsSettings(iot_endpoint_url=api_url))
            try:
                iot.create_thing(thingName="DEV1")
                async with connect(stack.url, "DEV1", subprotocols=["ocpp2.0.1"]) as cp:
                    assert (await authorize(cp, "BLK"))["status"] == "Unknown"
                    put_tokens(api_url, [IdTokenRecord("BLK2", "Blocked")])
                    assert (await authorize(cp, "BLK2"))["status"] == "Blocked"
                # The command API: curl -X POST .../charge-points/DEV1/calls/Reset -d '{"type":...}'
                port = stack.gateway.command_api_port
                assert port is not None
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(simulator(stack.url, "DEV1", "2.0.1").run)
                    await until(
                        lambda: stack.gateway.bridge.sessions.get("DEV1") is not None,
                        what="the simulator is connected",
                    )
                    await recorded_protocol((iot, iot_data), "DEV1", "ocpp2.0.1")
                    reset = await post(port, "DEV1", "Reset", {"type": "Immediate"})
                    assert reset == (200, {"status": "Accepted"})
                    # The embedded console's Commands page was pointed at the same API.
                    page = (await call(stack.fakeiot, "GET", "/console/commands"))[2]
                    form = {
                        "csrf": token_of(page),
                        "cp_id": "DEV1",
                        "action": "Reset",
                        "payload": '{"type": "Immediate"}',
                    }
                    page = (await call(stack.fakeiot, "POST", "/console/commands", form=form))[2]
                    assert (
                        "Answer: HTTP 200" in page
                        and "&quot;status&quot;: &quot;Accepted&quot;" in page
                    )
                    nursery.cancel_scope.cancel()
            finally:
                iot.close()
                iot_data.close()


async def test_dev_stack_defaults_to_accept_all_without_a_command_api(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with dev_stack(tmp_path) as stack:
            assert stack.gateway.command_api_port is None
            page = (await call(stack.fakeiot, "GET", "/console/commands"))[2]
            assert "No command API is configured" in page
            iot, iot_data = make_clients(AwsSettings(iot_endpoint_url=stack.fakeiot.api_url))
            try:
                iot.create_thing(thingName="DEV1")
                async with connect(stack.url, "DEV1", subprotocols=["ocpp1.6"]) as cp:
                    assert (await authorize(cp, "ANYTHING"))["status"] == "Accepted"
            finally:
                iot.close()
                iot_data.close()
