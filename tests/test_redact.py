"""Secrets in OCPP frames never reach the log: gateway/redact.py, and the gateway at DEBUG."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any

import pytest
import trio
from ocpp.charge_point import remove_nones, snake_to_camel_case
from ocpp.messages import Call, CallResult
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from ocpp.v201 import datatypes as types201
from ocpp.v201 import enums as enums201

from gateway.app import RunningGateway
from gateway.calls import frame_kind
from gateway.chargepoint import boot_notification, connect
from gateway.redact import redact_frame

SECRET = "s3cr3t-Passw0rd-XYZ"


def frame(message: Any, action: str, unique_id: str = "id-1") -> str:
    payload = snake_to_camel_case(remove_nones(asdict(message)))
    return Call(unique_id=unique_id, action=action, payload=payload).to_json()


def set_variables(name: str, value: str) -> str:
    data = types201.SetVariableDataType(
        attribute_value=value,
        component=types201.ComponentType(name="SecurityCtrlr"),
        variable=types201.VariableType(name=name),
    )
    return frame(call201.SetVariables(set_variable_data=[data]), "SetVariables")


def network_profile() -> str:
    profile = types201.NetworkConnectionProfileType(
        ocpp_version=enums201.OCPPVersionEnumType.ocpp20,
        ocpp_transport=enums201.OCPPTransportEnumType.json,
        ocpp_csms_url="wss://csms.example/ocpp",
        message_timeout=30,
        security_profile=2,
        ocpp_interface=enums201.OCPPInterfaceEnumType.wireless0,
        vpn=types201.VPNType(
            server="vpn.example", user="u", password=SECRET, key=SECRET + "k", type="IPSec"
        ),
        apn=types201.APNType(
            apn="internet",
            apn_authentication=enums201.APNAuthenticationEnumType.auto,
            apn_password=SECRET,
            sim_pin=4321,
        ),
    )
    message = call201.SetNetworkProfile(configuration_slot=1, connection_data=profile)
    return frame(message, "SetNetworkProfile")


@pytest.mark.parametrize(
    "text",
    [
        frame(
            call16.ChangeConfiguration(key="AuthorizationKey", value=SECRET), "ChangeConfiguration"
        ),
        set_variables("BasicAuthPassword", SECRET),
        network_profile(),
        # A CP reading its configuration back (1.6 GetConfiguration's answer).
        CallResult(
            unique_id="id-2",
            payload={
                "configurationKey": [
                    {"key": "AuthorizationKey", "readonly": False, "value": SECRET}
                ]
            },
        ).to_json(),
        json.dumps([2, "id-3", "DataTransfer", {"vendorId": "V", "clientSecret": SECRET}]),
        # A CP reporting its variables (2.0.1 NotifyReport, after GetBaseReport FullInventory):
        # the value sits in variableAttribute, beside the variable that names the secret.
        frame(
            call201.NotifyReport(
                request_id=1,
                generated_at="2026-01-01T00:00:00Z",
                seq_no=0,
                report_data=[
                    types201.ReportDataType(
                        component=types201.ComponentType(name="SecurityCtrlr"),
                        variable=types201.VariableType(name="BasicAuthPassword"),
                        variable_attribute=[types201.VariableAttributeType(value=SECRET)],
                    )
                ],
            ),
            "NotifyReport",
        ),
    ],
    ids=[
        "ChangeConfiguration",
        "SetVariables",
        "SetNetworkProfile",
        "GetConfiguration",
        "secret-name",
        "NotifyReport",
    ],
)
def test_secrets_in_frames_are_hidden_and_the_rest_is_kept(text: str) -> None:
    shown = redact_frame(text)
    assert SECRET not in shown and "4321" not in shown
    assert "***" in shown
    assert json.loads(shown)[:2] == json.loads(text)[:2]  # type and message id kept


def test_ordinary_frames_are_shown_whole_and_the_rest_is_bounded() -> None:
    boot = frame(
        call201.BootNotification(
            charging_station=types201.ChargingStationType(
                model="M", vendor_name="V", serial_number="SN-1"
            ),
            reason=enums201.BootReasonEnumType.power_up,
        ),
        "BootNotification",
    )
    assert json.loads(redact_frame(boot)) == json.loads(boot)
    other = frame(
        call16.ChangeConfiguration(key="HeartbeatInterval", value="60"), "ChangeConfiguration"
    )
    assert json.loads(redact_frame(other)) == json.loads(other)  # not a secret: shown
    long = json.dumps([2, "id", "DataTransfer", {"vendorId": "V", "data": "x" * 5000}])
    shown = redact_frame(long, limit=100)
    assert len(shown) < 150 and shown.endswith(f"(a frame of {len(long)} characters)")
    # Not JSON (its secrets could not be found) or nested too deep: only its length.
    cut = f'[2, "id", "X", {{"password": "{SECRET}"'
    assert redact_frame(cut) == f"<{len(cut)} characters, not JSON: not shown>"
    assert "nested too deep" in redact_frame("[" * 100_000 + "]" * 100_000)


def test_a_frame_cannot_break_a_log_line() -> None:
    """Characters a log viewer or terminal takes as a line break or control sequence (NEL,
    U+2028/9, 8-bit CSI, DEL) are shown escaped: one frame stays on its own log line."""
    tricky = "a\u0085b\u2028c\u2029d\u009b31me\u007ff\nfake: WARNING injected"
    text = json.dumps([2, "id", "DataTransfer", {"vendorId": "V", "data": tricky}])
    shown = redact_frame(text)
    assert not any(ch in shown for ch in "\u0085\u2028\u2029\u009b\u007f\n")
    assert shown.splitlines() == [shown]
    assert json.loads(shown)[3]["data"] == tricky  # still the same JSON
    assert "é" in redact_frame(json.dumps(["é"], ensure_ascii=False))  # other text kept as is
    lone = redact_frame('[2, "id", "DataTransfer", {"data": "\\ud800"}]')
    assert json.loads(lone)[3]["data"] == "\ud800" and lone.encode("utf-8")  # a UTF-8 log takes it


async def test_the_gateway_at_debug_logs_frames_without_their_secrets(
    gateway: RunningGateway,
    register: Any,
    mqtt_driver: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    register("CP1")
    caplog.set_level(logging.DEBUG, logger="gateway.pumps")
    async with connect(gateway.url, "CP1") as cp:
        await cp.call(*boot_notification("2.0.1", vendor="V", model="M", serial="S1", firmware="1"))
        command = set_variables("BasicAuthPassword", SECRET)
        async with mqtt_driver.link("backend:test") as backend:
            await backend.publish("CP1/out", command.encode())
            with trio.fail_after(5):
                assert json.loads(await cp.receive_text()) == json.loads(command)  # delivered whole
        answer = CallResult(
            unique_id="id-1",
            payload={
                "setVariableResult": [
                    {
                        "attributeStatus": "Accepted",
                        "attributeValue": SECRET,
                        "component": {"name": "SecurityCtrlr"},
                        "variable": {"name": "BasicAuthPassword"},
                    }
                ]
            },
        ).to_json()
        await cp.send_text(answer)
        await trio.sleep(0.3)
    frames = [
        r.getMessage()
        for r in caplog.records
        if "-> CP:" in r.getMessage() or "CP ->" in r.getMessage()
    ]
    assert any("SetVariables" in line and "***" in line for line in frames), frames
    assert any('"setVariableResult"' in line for line in frames), frames
    assert all(SECRET not in record.getMessage() for record in caplog.records)


async def test_what_a_cp_chooses_cannot_forge_a_log_line(
    gateway: RunningGateway, register: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A close reason and a CALL's message id are the CP's text: logged on one line, escaped."""
    register("CP1")
    caplog.set_level(logging.INFO, logger="gateway")
    forged = "\n2026-01-01 00:00:00,000 CRITICAL gateway: forged\x1b[31m"
    async with connect(gateway.url, "CP1") as cp:
        await cp.ws.aclose(4000, "bye" + forged)
    with trio.fail_after(5):
        while not any("disconnected" in r.getMessage() for r in caplog.records):
            await trio.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("gateway")]
    ended = [m for m in lines if "CP1: disconnected" in m]
    assert ended and "forged" in ended[0], lines
    assert all("\n" not in m and "\x1b" not in m for m in lines), lines


def test_a_call_id_with_control_characters_is_not_tracked() -> None:
    """Raw control characters are not JSON: such a frame's id never reaches a log line."""
    assert frame_kind('[2,"ok-1","Heartbeat",{}]') == (2, "ok-1")
    assert frame_kind('[2,"a\nCRITICAL forged","Heartbeat",{}]') is None
    assert frame_kind('[2,"a\x1b[31m","Heartbeat",{}]') is None
