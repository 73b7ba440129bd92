"""The processor's answer to one frame (``Processor.answer``) and the shadow document of a boot,
without a broker: the CALLERROR matrix of OCPP-J, duplicates, handler bugs.

``answer`` reaches the outside world only to store a BootNotification in the shadow (through
``iot_data``): a recording stand-in takes its place.  The end-to-end path (CP -> gateway -> MQTT
-> processor -> back) is tested once in test_gateway_loop.py.
"""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import pytest
import trio

from gateway.chargepoint import boot_notification
from gateway.mqtt_link import MqttDriver
from gateway.processor import Processor, ProcessorSettings
from gateway.processor.authorization import Authorization
from gateway.processor.boot import boot_shadow_document
from gateway.processor.handlers import Call, Context


class RecordingIotData:
    """Records ``update_thing_shadow`` calls, as boto3's iot-data client would receive them."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, dict[str, Any]]] = []

    def update_thing_shadow(self, *, thingName: str, payload: bytes) -> dict[str, Any]:  # noqa: N803 - boto3's name
        self.updates.append((thingName, json.loads(payload)))
        return {}

    def get_thing_shadow(self, *, thingName: str) -> dict[str, Any]:  # noqa: N803 - boto3's name
        raise AssertionError("answer() must not look the version up: the caller passes it")


@pytest.fixture
def iot_data() -> RecordingIotData:
    return RecordingIotData()


@pytest.fixture
def processor(iot_data: RecordingIotData) -> Processor:
    # answer() never touches the MQTT driver: only run() does.
    return Processor(cast(MqttDriver, None), iot_data, ProcessorSettings(heartbeat_interval=7))


async def answer(processor: Processor, frame: str | bytes, version: str = "2.0.1") -> Any:
    raw = frame.encode() if isinstance(frame, str) else frame
    reply = await processor.answer("CPX", version, raw)
    return None if reply is None else json.loads(reply)


# The CALLERROR matrix: what a malformed or unacceptable frame is answered, per OCPP version.
# (One case also runs end to end: test_gateway_loop.py::test_bad_frame_gets_its_call_error_end_to_end.)
CALL_ERRORS = [
    ("1.6", "this is not json", [4, "-1", "FormationViolation"]),
    ("2.0.1", '{"not": "an array"}', [4, "-1", "FormatViolation"]),
    ("2.0.1", "[]", [4, "-1", "FormatViolation"]),
    ("1.6", '[2, "id1"]', [4, "id1", "FormationViolation"]),
    ("2.0.1", '[2, 17, "Heartbeat", {}]', [4, "-1", "FormatViolation"]),
    ("2.0.1", '[2, "' + "x" * 37 + '", "Heartbeat", {}]', [4, "-1", "FormatViolation"]),
    ("1.6", '[2, "' + "y" * 5000 + '", "Heartbeat", {}]', [4, "-1", "FormationViolation"]),
    ("2.0.1", '[9, "id9", "Heartbeat", {}]', [4, "id9", "MessageTypeNotSupported"]),
    ("2.0.1", '[2, "id2", "NoSuchAction", {"vendorId": "x"}]', [4, "id2", "NotImplemented"]),
    ("1.6", '[2, "id3", "NoSuchAction", {}]', [4, "id3", "NotImplemented"]),
    ("1.6", '[2, "id3b", "RemoteStartTransaction", {"idTag": "T"}]', [4, "id3b", "NotSupported"]),
    ("2.0.1", '[2, "id3c", "RequestStartTransaction", {}]', [4, "id3c", "NotSupported"]),
    ("2.0.1", '[2, "id4", "Heartbeat", {"unexpected": 1}]', [4, "id4", "FormatViolation"]),
    ("1.6", '[2, "id5", "Authorize", {}]', [4, "id5", "ProtocolError"]),
    (
        "1.6",
        '[2, "id6", "StatusNotification", {"connectorId": "one", "errorCode": "NoError", "status": "Available"}]',
        [4, "id6", "TypeConstraintViolation"],
    ),
    ("2.0.1", b'[2, "id7", "Heartbeat", {"x": "\xff"}]', [4, "-1", "FormatViolation"]),
]


@pytest.mark.parametrize(("version", "frame", "expected"), CALL_ERRORS)
async def test_bad_frames_get_the_specified_call_error(
    processor: Processor, version: str, frame: str | bytes, expected: list[Any]
) -> None:
    reply = await answer(processor, frame, version)
    assert reply[:3] == expected
    assert isinstance(reply[3], str) and reply[3] and isinstance(reply[4], dict)
    assert processor.internal_errors == 0


async def test_a_deep_frame_is_refused_before_it_is_parsed(processor: Processor) -> None:
    deep = '[2, "d", "Heartbeat", {"x": ' + "[" * 5000 + "]" * 5000 + "}]"
    reply = await answer(processor, deep)
    assert reply[0] == 4 and reply[2:4] == ["FormatViolation", "JSON nests deeper than 32 levels"]


@pytest.mark.parametrize("frame", ['[3, "r1", {}]', '[4, "r2", "InternalError", "oops", {}]'])
async def test_callresults_and_callerrors_from_a_cp_are_not_answered(
    processor: Processor, frame: str
) -> None:
    assert await answer(processor, frame) is None


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_heartbeat_is_answered_with_the_current_time(
    processor: Processor, version: str
) -> None:
    reply = await answer(processor, '[2, "hb", "Heartbeat", {}]', version)
    assert reply[:2] == [3, "hb"] and set(reply[2]) == {"currentTime"}


async def test_boot_is_accepted_and_stored_in_the_shadow(
    processor: Processor, iot_data: RecordingIotData
) -> None:
    action, payload = boot_notification("2.0.1", vendor="V", model="M", serial="S", firmware="F")
    reply = await answer(processor, json.dumps([2, "b1", action, payload]))
    assert reply[:2] == [3, "b1"]
    assert reply[2]["status"] == "Accepted" and reply[2]["interval"] == 7
    assert iot_data.updates == [("CPX", {"state": {"reported": payload}})]


async def test_an_invalid_boot_is_not_stored(
    processor: Processor, iot_data: RecordingIotData
) -> None:
    reply = await answer(processor, '[2, "b2", "BootNotification", {"reason": "PowerUp"}]')
    assert reply == [
        4,
        "b2",
        "ProtocolError",
        "Payload for Action is incomplete",
        {"cause": "'chargingStation' is a required property"},
    ]
    assert iot_data.updates == []


async def test_a_call_received_again_gets_its_first_answer_and_is_handled_once(
    processor: Processor, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = 0
    original = processor.handlers.get("1.6", "StartTransaction")
    assert original is not None

    async def counting(call: Call) -> dict[str, Any]:
        nonlocal runs
        runs += 1
        return await original(call)

    processor.handlers.register("1.6", "StartTransaction", counting)
    start = (
        '[2,"tx-1","StartTransaction",{"connectorId":1,"idTag":"T","meterStart":0,'
        '"timestamp":"2024-01-01T00:00:00Z"}]'
    )
    first = await processor.answer("CPX", "1.6", start.encode())
    again = await processor.answer("CPX", "1.6", start.encode())
    assert first is not None and again == first and "transactionId" in json.loads(first)[2]
    assert runs == 1 and processor.duplicates == 1
    # The same message id with other bytes is a new CALL (CPs that restart their ids).
    other = await processor.answer("CPX", "1.6", start.replace('"T"', '"U"').encode())
    assert other != first and runs == 2
    # And the same frame from another CP is that CP's own CALL.
    await processor.answer("CPY", "1.6", start.encode())
    assert runs == 3 and processor.duplicates == 1


async def test_a_handler_bug_is_answered_internal_error_with_the_message_id(
    processor: Processor, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(call: Call) -> dict[str, Any]:
        raise ZeroDivisionError("a bug")

    processor.handlers.register("2.0.1", "Heartbeat", broken)
    with caplog.at_level(logging.ERROR, logger="gateway.processor"):
        reply = await answer(processor, '[2, "hb-bug", "Heartbeat", {}]')
    assert reply == [4, "hb-bug", "InternalError", "The CSMS could not process this message", {}]
    assert processor.internal_errors == 1
    assert any("CPX: internal error on message hb-bug" in r.getMessage() for r in caplog.records)


async def test_a_duplicate_arriving_while_the_first_is_answered_waits_for_it(
    processor: Processor, monkeypatch: pytest.MonkeyPatch, iot_data: RecordingIotData
) -> None:
    release = trio.Event()
    original_update = Context.update_shadow

    async def slow_update(self: Context, cp_id: str, reported: dict[str, Any]) -> None:
        await release.wait()
        await original_update(self, cp_id, reported)

    monkeypatch.setattr(Context, "update_shadow", slow_update)
    action, payload = boot_notification("2.0.1", vendor="V", model="M", serial="S", firmware="F")
    boot = json.dumps([2, "boot-d", action, payload]).encode()
    answers: list[str | None] = []

    async def one() -> None:
        answers.append(await processor.answer("CPX", "2.0.1", boot))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        assert processor.duplicates == 1 and answers == []  # the second copy waits for the first
        release.set()
    assert answers[0] is not None and answers[0] == answers[1]
    assert len(iot_data.updates) == 1


# -- boot_shadow_document ---------------------------------------------------------------------------


def test_a_201_boot_is_stored_as_sent() -> None:
    payload = {
        "reason": "PowerUp",
        "chargingStation": {"vendorName": "V", "model": "M", "modem": {"iccid": "1"}},
    }
    document = boot_shadow_document(payload, "2.0.1")
    assert document == payload and document is not payload


def test_a_16_boot_is_mapped_to_the_201_shape() -> None:
    payload = {
        "chargePointVendor": "V",
        "chargePointModel": "M16",
        "chargePointSerialNumber": "S",
        "firmwareVersion": "F",
        "chargeBoxSerialNumber": "B",
        "meterType": "MT",
        "meterSerialNumber": "MS",
        "iccid": "8901",
        "imsi": "2620",
    }
    assert boot_shadow_document(payload, "1.6") == {
        "chargingStation": {
            "vendorName": "V",
            "model": "M16",
            "serialNumber": "S",
            "firmwareVersion": "F",
            "chargeBoxSerialNumber": "B",
            "meterType": "MT",
            "meterSerialNumber": "MS",
            "modem": {"iccid": "8901", "imsi": "2620"},
        }
    }


def test_a_minimal_16_boot_leaves_out_what_was_not_sent() -> None:
    payload = {"chargePointVendor": "V", "chargePointModel": "M16"}
    assert boot_shadow_document(payload, "1.6") == {
        "chargingStation": {"vendorName": "V", "model": "M16"}
    }


class _Refuser:
    """An authorizer that blocks every token, and records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str | None]] = []

    async def authorize(self, cp_id: str, id_token: str, token_type: str | None) -> Authorization:
        self.asked.append((id_token, token_type))
        return Authorization("Blocked")


async def test_id_tokens_are_decided_by_the_authorizer_except_no_authorization(
    iot_data: RecordingIotData,
) -> None:
    refuser = _Refuser()
    processor = Processor(
        cast(MqttDriver, None),
        iot_data,
        ProcessorSettings(heartbeat_interval=7),
        authorizer=refuser,
    )
    blocked = await answer(
        processor, '[2, "a1", "Authorize", {"idToken": {"idToken": "T1", "type": "ISO14443"}}]'
    )
    assert blocked == [3, "a1", {"idTokenInfo": {"status": "Blocked"}}]
    assert await answer(processor, '[2, "a2", "Authorize", {"idTag": "T2"}]', "1.6") == [
        3,
        "a2",
        {"idTagInfo": {"status": "Blocked"}},
    ]
    # Free vending: the station asks for no identification, so there is nothing to look up.
    free = await answer(
        processor, '[2, "a3", "Authorize", {"idToken": {"idToken": "", "type": "NoAuthorization"}}]'
    )
    assert free == [3, "a3", {"idTokenInfo": {"status": "Accepted"}}]
    assert refuser.asked == [("T1", "ISO14443"), ("T2", None)]
