"""The console's Commands page: a form sent through the processor's real command API to a real CP."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio
from ocpp.messages import CallResult

from fakeiot import FakeIot
from fakeiot.console_commands import CommandFormError, check_command_api_url, parse_form
from gateway.app import RunningGateway, run_gateway
from gateway.chargepoint import ChargePoint, connect
from gateway.mqtt_link import MqttDriver
from gateway.processor.command_http import serve_command_api
from gateway.processor.command_service import CommandService, CommandSettings

from .conftest import gateway_config
from .test_console import HOSTILE_LEVEL, call, token_of
from .waiting import until_protocol_recorded

PAGE = "/console/commands"


@pytest.fixture
async def command_api(
    fakeiot: FakeIot,
    mqtt_driver: MqttDriver,
    aws: Any,
    register: Callable[..., None],
    nursery: trio.Nursery,
) -> RunningGateway:
    """A gateway, and the processor's command API that fakeiot's console is pointed at."""
    register("CP1")
    gateway: RunningGateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, processor=False)
    )
    commands = CommandService(
        mqtt_driver, aws[0], aws[1], CommandSettings(client_id="test:console-cmd", timeout=2.0)
    )
    await nursery.start(commands.run)
    port: int = await nursery.start(partial(serve_command_api, commands, host="127.0.0.1", port=0))
    fakeiot.use_command_api(f"http://127.0.0.1:{port}")
    return gateway


async def send(fakeiot: FakeIot, cp_id: str, action: str, payload: str) -> tuple[int, str]:
    status, _, page = await call(fakeiot, "GET", PAGE)
    assert status == 200, page
    form = {"csrf": token_of(page), "cp_id": cp_id, "action": action, "payload": payload}
    status, _, page = await call(fakeiot, "POST", PAGE, form=form)
    return status, page


async def answer_next(cp: ChargePoint, payload: dict[str, Any]) -> list[Any]:
    """Read the next CALL the CP gets and answer it with ``payload``; returns the CALL."""
    with trio.fail_after(10):
        received = json.loads(await cp.receive_text())
    await cp.send_text(CallResult(unique_id=received[1], payload=payload).to_json())
    return received  # type: ignore[no-any-return]


async def test_a_command_from_the_page_reaches_the_cp_and_its_answer_is_shown(
    fakeiot: FakeIot, command_api: RunningGateway, aws: Any
) -> None:
    async with connect(command_api.url, "CP1") as cp, trio.open_nursery() as nursery:
        await until_protocol_recorded(aws, "CP1")  # else the command API answers 409
        calls: list[list[Any]] = []

        async def cp_side() -> None:
            calls.append(await answer_next(cp, {"status": "Accepted"}))

        nursery.start_soon(cp_side)
        status, page = await send(fakeiot, "CP1", "Reset", '{"type": "Immediate"}')
    assert status == 200
    assert calls[0][2:] == ["Reset", {"type": "Immediate"}]  # what the CP got: the form's CALL
    assert "Answer: HTTP 200" in page and "&quot;status&quot;: &quot;Accepted&quot;" in page
    # The form keeps what was sent, for the next one.
    assert 'value="CP1"' in page and 'value="Reset"' in page


async def test_the_command_apis_refusals_and_a_hostile_answer_are_shown_escaped(
    fakeiot: FakeIot, command_api: RunningGateway, aws: Any
) -> None:
    # Not a registered CP, a payload the schema refuses: the command API's own answers.
    status, page = await send(fakeiot, "CP9", "Reset", '{"type": "Immediate"}')
    assert status == 200 and "Answer: HTTP 404" in page and "UnknownChargePoint" in page
    async with connect(command_api.url, "CP1") as cp:
        await until_protocol_recorded(aws, "CP1")  # else the command API answers 409
        status, page = await send(fakeiot, "CP1", "Reset", '{"type": "Now"}')
        assert "Answer: HTTP 400" in page and "Immediate" in page  # nothing was sent
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_next, cp, {"status": HOSTILE_LEVEL})
            status, page = await send(fakeiot, "CP1", "Reset", '{"type": "Immediate"}')
    # A CP answering what the schema does not allow: the command API says so; the CP's text,
    # shown, stays text.
    assert status == 200 and "Answer: HTTP 502" in page
    assert "<img" not in page and "&lt;img" in page
    # A CP that does not answer: the command API's time-out, shown.
    async with connect(command_api.url, "CP1"):
        status, page = await send(fakeiot, "CP1", "Reset", '{"type": "Immediate"}')
    assert "Answer: HTTP 504" in page


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (("", "Reset", "{}"), "give the charge point's id"),
        (("CP1", "reset; rm", "{}"), "an OCPP action name"),
        (("CP1", "Reset", "{nope"), "not JSON"),
        (("CP1", "Reset", "[1, 2]"), "a JSON object"),
    ],
)
async def test_a_form_that_cannot_be_sent_says_why_and_sends_nothing(
    fakeiot: FakeIot, command_api: RunningGateway, fields: tuple[str, str, str], message: str
) -> None:
    with pytest.raises(CommandFormError, match=message):
        parse_form(*fields)
    status, page = await send(fakeiot, *fields)
    assert status == 200 and message.replace("'", "&#x27;") in page


async def test_without_a_command_api_the_page_says_how_and_a_post_is_refused(
    fakeiot: FakeIot,
) -> None:
    status, _, page = await call(fakeiot, "GET", PAGE)
    assert status == 200 and "No command API is configured" in page
    assert "--processor-http-port" in page
    form = {"csrf": token_of((await call(fakeiot, "GET", "/console/mqtt"))[2]), "cp_id": "CP1"}
    status, _, page = await call(fakeiot, "POST", PAGE, form=form)
    assert status == 409 and "no command API is configured" in page


async def test_an_unreachable_command_api_is_an_answer_not_an_error(fakeiot: FakeIot) -> None:
    with trio.socket.socket() as bound:  # a port bound and never listening: refused at once
        await bound.bind(("127.0.0.1", 0))
        fakeiot.use_command_api(f"http://127.0.0.1:{bound.getsockname()[1]}")
        status, page = await send(fakeiot, "CP1", "Reset", '{"type": "Immediate"}')
    assert status == 200 and "Answer: no answer" in page and "did not answer" in page


@pytest.mark.parametrize("url", ["ftp://h/x", "http://", "127.0.0.1:8091", ""])
def test_a_command_api_url_must_be_http(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        check_command_api_url(url)
    assert check_command_api_url("http://127.0.0.1:8091/") == "http://127.0.0.1:8091"
