"""The handler registry and the errors of handlers: override order, entry points, --handlers,
OCPP errors, bugs and invalid responses; and the billing example of docs/processor.md end to end.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import EntryPoint
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
import trio
from ocpp.exceptions import NotSupportedError, PropertyConstraintViolationError

from fakeiot import FakeIot
from gateway.app import run_gateway
from gateway.chargepoint import CallErrorReceived, connect
from gateway.mqtt_link import MqttDriver
from gateway.processor import (
    Call,
    HandlerLoadError,
    Processor,
    ProcessorSettings,
    handler,
    load_registry,
)
from gateway.processor.handlers import ENTRY_POINT_GROUP

from .conftest import gateway_config
from .processes import ROOT, run

EXAMPLES = ROOT / "docs" / "examples"


def make_module(monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> ModuleType:
    """An importable module ``name`` with ``source``, removed from sys.modules after the test."""
    module = ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, name, module)
    return module


HEARTBEAT_A = """
from gateway.processor.handlers import handler

@handler("2.0.1", "Heartbeat")
async def heartbeat(call):
    return {"currentTime": "2000-01-01T00:00:00+00:00"}
"""

HEARTBEAT_B = HEARTBEAT_A.replace("2000-01-01", "2001-01-01")


async def heartbeat_of(processor: Processor) -> dict[str, Any]:
    reply = await processor.answer("CPX", "2.0.1", b'[2,"hb","Heartbeat",{}]')
    assert reply is not None
    frame = json.loads(reply)
    assert frame[0] == 3, frame
    return cast(dict[str, Any], frame[2])


def processor_with(**kwargs: Any) -> Processor:
    return Processor(cast(MqttDriver, None), None, ProcessorSettings(), **kwargs)


# -- the registry ------------------------------------------------------------------------------------


async def test_later_modules_override_earlier_ones_and_say_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    make_module(monkeypatch, "cpo_a", HEARTBEAT_A)
    make_module(monkeypatch, "cpo_b", HEARTBEAT_B)
    with caplog.at_level(logging.INFO, logger="gateway.processor"):
        registry = load_registry(["cpo_a,cpo_b"], plugins=[])
    assert (await heartbeat_of(processor_with(registry=registry)))["currentTime"].startswith("2001")
    assert (
        await heartbeat_of(processor_with(registry=load_registry(["cpo_b", "cpo_a"], plugins=[])))
    )["currentTime"].startswith("2000")
    overrides = [r.getMessage() for r in caplog.records if "now answered by" in r.getMessage()]
    assert overrides == [
        "processor: OCPP 2.0.1 Heartbeat now answered by cpo_a.heartbeat "
        "(was gateway.processor.defaults_201.heartbeat)",
        "processor: OCPP 2.0.1 Heartbeat now answered by cpo_b.heartbeat (was cpo_a.heartbeat)",
    ]


async def test_entry_points_load_before_handlers_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    make_module(monkeypatch, "plugin_a", HEARTBEAT_A)
    make_module(monkeypatch, "cpo_b", HEARTBEAT_B)
    plugin = EntryPoint(name="acme", value="plugin_a", group=ENTRY_POINT_GROUP)
    alone = load_registry([], plugins=[plugin])
    assert (await heartbeat_of(processor_with(registry=alone)))["currentTime"].startswith("2000")
    both = load_registry(["cpo_b"], plugins=[plugin])
    assert (await heartbeat_of(processor_with(registry=both)))["currentTime"].startswith("2001")


def test_the_installed_entry_points_are_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    make_module(monkeypatch, "plugin_a", HEARTBEAT_A)
    asked: list[str] = []

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        asked.append(group)
        return [EntryPoint(name="acme", value="plugin_a", group=group)]

    monkeypatch.setattr("gateway.processor.registry.entry_points", fake_entry_points)
    registry = load_registry()
    assert asked == ["ocpp_gateway.handlers"]
    handler_fn = registry.get("2.0.1", "Heartbeat")
    assert handler_fn is not None and handler_fn.__module__ == "plugin_a"


@pytest.mark.parametrize(
    ("source", "plugin", "message"),
    [
        (None, None, "cannot import handler module 'cpo_missing': ModuleNotFoundError"),
        (
            "raise RuntimeError('boom')",
            None,
            "cannot import handler module 'cpo_bad': RuntimeError: boom",
        ),
        (
            "from gateway.processor.handlers import handler\n"
            "@handler('2.0.1', 'MakeCoffee')\nasync def f(call):\n    return {}\n",
            None,
            "OCPP 2.0.1 has no action 'MakeCoffee'",
        ),
        (None, "no_such_plugin", "cannot load entry point 'broken'"),
    ],
)
def test_a_module_that_cannot_be_loaded_is_a_clear_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str | None,
    plugin: str | None,
    message: str,
) -> None:
    name = "cpo_missing" if source is None else "cpo_bad"
    if source is not None:
        (tmp_path / "cpo_bad.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
    plugins = [EntryPoint(name="broken", value=plugin, group=ENTRY_POINT_GROUP)] if plugin else []
    with pytest.raises(HandlerLoadError) as info:
        load_registry([] if plugin else [name], plugins=plugins)
    assert message in str(info.value) and "\n" not in str(info.value)
    sys.modules.pop("cpo_bad", None)


def test_handler_refuses_an_unknown_version() -> None:
    with pytest.raises(ValueError, match="OCPP version '1.5'"):
        handler("1.5", "Heartbeat")


def test_the_processor_cli_exits_2_with_one_line_for_a_bad_module() -> None:
    done = run("-m", "gateway.processor", "--handlers", "cpo_does_not_exist", timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: cannot import handler module 'cpo_does_not_exist': ModuleNotFoundError: "
        "No module named 'cpo_does_not_exist'"
    ]


# -- what a handler's failures are answered ------------------------------------------------------------


async def test_an_ocpp_error_is_answered_as_that_callerror() -> None:
    processor = processor_with()

    async def refuse(call: Call) -> dict[str, Any]:
        raise PropertyConstraintViolationError("vendorId unknown here", {"vendorId": "x"})

    async def unsupported(call: Call) -> dict[str, Any]:
        raise NotSupportedError()

    processor.handlers.register("2.0.1", "DataTransfer", refuse)
    processor.handlers.register("1.6", "DataTransfer", unsupported)
    reply = await processor.answer("CPX", "2.0.1", b'[2,"d1","DataTransfer",{"vendorId":"x"}]')
    assert json.loads(reply or "") == [
        4,
        "d1",
        "PropertyConstraintViolation",
        "vendorId unknown here",
        {"vendorId": "x"},
    ]
    reply = await processor.answer("CPX", "1.6", b'[2,"d2","DataTransfer",{"vendorId":"x"}]')
    assert json.loads(reply or "")[:3] == [4, "d2", "NotSupported"]
    assert processor.internal_errors == 0


@pytest.mark.parametrize(
    "response", [{"status": "Maybe"}, {"unexpected": 1}, ["not", "a", "dict"], None]
)
async def test_an_invalid_response_is_answered_internal_error_and_logged(
    caplog: pytest.LogCaptureFixture, response: Any
) -> None:
    processor = processor_with()

    async def wrong(call: Call) -> Any:
        return response

    processor.handlers.register("2.0.1", "DataTransfer", wrong)
    with caplog.at_level(logging.ERROR, logger="gateway.processor"):
        reply = await processor.answer("CPX", "2.0.1", b'[2,"d3","DataTransfer",{"vendorId":"x"}]')
    assert json.loads(reply or "")[:3] == [4, "d3", "InternalError"]
    assert processor.internal_errors == 1
    (record,) = [r for r in caplog.records if "CPX: internal error on message d3" in r.getMessage()]
    assert record.exc_info is not None and "DataTransfer handler returned" in str(
        record.exc_info[1]
    )
    # The next CALL is answered as usual.
    assert "currentTime" in await heartbeat_of(processor)


# -- the billing example of docs/processor.md ------------------------------------------------------------


class Billing:
    """A tiny HTTP server on 127.0.0.1 that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        received = self.events

        class Handle(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"


@pytest.fixture
def billing() -> Iterator[Billing]:
    service = Billing()
    thread = threading.Thread(target=service.server.serve_forever, name="billing")
    thread.start()
    try:
        yield service
    finally:
        service.server.shutdown()
        thread.join()
        service.server.server_close()


def test_the_docs_include_the_example_verbatim() -> None:
    page = (ROOT / "docs" / "processor.md").read_text()
    assert (EXAMPLES / "billing_handlers.py").read_text().strip() in page


async def test_the_billing_example_posts_each_transaction_event(
    fakeiot: FakeIot,
    mqtt_driver: MqttDriver,
    aws: tuple[Any, Any],
    register: Callable[..., None],
    billing: Billing,
    monkeypatch: pytest.MonkeyPatch,
    nursery: trio.Nursery,
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv("BILLING_URL", billing.url)
    monkeypatch.delitem(sys.modules, "billing_handlers", raising=False)
    gateway = await nursery.start(run_gateway, gateway_config(fakeiot, processor=False))
    # What `python -m gateway.processor --handlers billing_handlers` builds.
    settings = ProcessorSettings(handler_modules=("billing_handlers",))
    processor = Processor(mqtt_driver, aws[1], settings)
    await nursery.start(processor.run_supervised)
    register("CP-BILL")
    event = {
        "eventType": "Ended",
        "timestamp": "2024-01-01T01:00:00+00:00",
        "triggerReason": "StopAuthorized",
        "seqNo": 3,
        "transactionInfo": {"transactionId": "tx-42"},
        "idToken": {"idToken": "T1", "type": "ISO14443"},
    }
    async with connect(gateway.url, "CP-BILL") as cp:
        answer = await cp.call("TransactionEvent", event, timeout=10)
        assert answer == {"idTokenInfo": {"status": "Accepted"}}
        # Billing down: InternalError, and the CP may retry.
        monkeypatch.setenv("BILLING_URL", "http://127.0.0.1:1/closed")
        with pytest.raises(CallErrorReceived) as info:
            await cp.call("TransactionEvent", {**event, "seqNo": 4}, timeout=30)
        assert info.value.code == "InternalError"
    assert len(billing.events) == 1
    posted = billing.events[0]
    assert posted["chargePoint"] == "CP-BILL" and posted["transactionId"] == "tx-42"
    assert posted["eventType"] == "Ended"
    sys.modules.pop("billing_handlers", None)
