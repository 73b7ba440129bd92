"""The pure rules of commands to charge points (gateway/processor/commands.py), without sockets."""

from __future__ import annotations

import json

import pytest

from gateway.processor.commands import (
    CallAnswered,
    CallRejected,
    Command,
    CommandQueues,
    InvalidCommand,
    Presence,
    QueueFull,
    ResponseInvalid,
    build_call,
    check_command,
    match_answer,
    parse_payload,
    version_from_shadow,
)


@pytest.mark.parametrize(
    ("cp_id", "action", "payload", "version", "field"),
    [
        ("CP1", "Reset", {}, "2.0.1", "type"),
        ("CP1", "Reset", {"type": "Soon"}, "2.0.1", "type"),
        ("CP1", "Reset", {"type": "Immediate", "x": 1}, "2.0.1", "x"),
        ("CP1", "Reset", {"type": "Immediate"}, "1.6", "type"),
        ("CP1", "NoSuchAction", {}, "2.0.1", "action"),
        ("CP1", "../../etc", {}, "2.0.1", "action"),
        ("a/b", "Reset", {"type": "Immediate"}, "2.0.1", "cp_id"),
        ("CP1", "SetVariables", {"setVariableData": [{"attributeValue": "1"}]}, "2.0.1",
         "setVariableData[0].component"),
    ],
)  # fmt: skip
def test_an_invalid_command_names_its_field(
    cp_id: str, action: str, payload: dict[str, object], version: str, field: str
) -> None:
    with pytest.raises(InvalidCommand) as caught:
        check_command(cp_id, action, payload, version)
    assert caught.value.field == field and caught.value.status == 400


def test_a_valid_command_becomes_a_call_with_a_fresh_uuid() -> None:
    command = check_command("CP1", "Reset", {"type": "Hard"}, "1.6")
    (id1, frame), (id2, _) = build_call(command), build_call(command)
    assert id1 != id2 and len(id1) == 36
    assert json.loads(frame) == [2, id1, "Reset", {"type": "Hard"}]


def test_payload_text_must_be_a_json_object() -> None:
    assert parse_payload('{"a": 1}') == {"a": 1}
    for text in ("[1]", "{", "NaN", b"\xff"):
        with pytest.raises(InvalidCommand):
            parse_payload(text)


COMMAND = Command("CP1", "Reset", {"type": "Immediate"}, "2.0.1")


def test_answers_are_matched_by_message_id_and_validated() -> None:
    assert match_answer(COMMAND, "m1", b'[3,"m1",{"status":"Accepted"}]') == CallAnswered(
        "m1", {"status": "Accepted"}
    )
    assert match_answer(COMMAND, "m1", b'[4,"m1","NotSupported","no",{}]') == CallRejected(
        "m1", "NotSupported", "no", {}
    )
    invalid = match_answer(COMMAND, "m1", b'[3,"m1",{"status":"Maybe"}]')
    assert isinstance(invalid, ResponseInvalid) and invalid.payload == {"status": "Maybe"}
    # not ours: another id, the CP's own CALLs, garbage
    for frame in (b'[3,"m2",{}]', b'[2,"m1","Heartbeat",{}]', b"nope", b"\xff"):
        assert match_answer(COMMAND, "m1", frame) is None


def test_the_queue_is_fifo_bounded_and_callers_may_leave() -> None:
    queues = CommandQueues(max_waiting=2)
    a, b, c, d = object(), object(), object(), object()
    assert queues.enter("CP1", a) is True
    assert queues.enter("CP1", b) is False and queues.enter("CP1", c) is False
    with pytest.raises(QueueFull):
        queues.enter("CP1", d)
    assert queues.enter("CP2", d) is True  # per CP
    assert queues.leave("CP1", b) is None  # a waiting caller gave up: the head is unchanged
    assert queues.leave("CP1", a) is c and queues.head("CP1") is c
    assert queues.leave("CP1", c) is None and queues.waiting("CP1") == 0


def _event(kind: str, client: str, session: str) -> tuple[str, bytes]:
    return f"$aws/events/presence/{kind}/{client}", json.dumps(
        {"clientId": client, "sessionIdentifier": session}
    ).encode()


def test_presence_follows_sessions_and_ignores_a_replaced_ones_disconnect() -> None:
    presence = Presence()
    assert presence.online("CP1") is None
    presence.apply(*_event("connected", "CP1", "s1"))
    presence.apply(*_event("connected", "CP1", "s2"))  # reconnected: s1 is replaced
    presence.apply(*_event("disconnected", "CP1", "s1"))
    assert presence.online("CP1") is True
    presence.apply(*_event("disconnected", "CP1", "s2"))
    assert presence.online("CP1") is False
    presence.apply("$aws/events/presence/connected/CP1", b"not json")
    assert presence.online("CP1") is False


def test_the_version_comes_from_the_shadow() -> None:
    assert version_from_shadow({"state": {"reported": {"ocppProtocol": "ocpp1.6"}}}) == "1.6"
    assert version_from_shadow({"state": {"reported": {"ocppProtocol": "ocpp2.0"}}}) == "2.0.1"
    assert version_from_shadow({"state": {"reported": {}}}) is None
    assert version_from_shadow([]) is None
