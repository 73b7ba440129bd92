"""Delivery to the message processor is at-least-once, and its answers are idempotent.

The processor acknowledges (PUBACK) a CALL from ``+/in`` only once it has
answered it (its answer handed to the broker) or deliberately dropped it.  A
processor that dies while it handles a CALL leaves the CALL unacknowledged in
its persistent session, and the broker gives it to the next processor with
the same client id.  A CALL that arrives twice (a redelivery, a CP retrying
with the same message id) gets the same answer twice and is handled once.

Over real sockets: Mosquitto for the kill (amqtt forgets a persistent
session's in-flight messages after 5 s), fakeiot for the duplicates.  A
"killed" processor is one whose MQTT socket is closed without a DISCONNECT
and whose tasks are then cancelled: exactly what the broker sees of a
SIGKILL.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from fakeiot import FakeIot
from gateway.app import run_gateway
from gateway.chargepoint import boot_notification, connect
from gateway.mqtt_link import MqttDriver, MqttSettings, open_mqtt_driver
from gateway.processor import Processor, ProcessorSettings
from gateway.processor.handlers import Call, Context
from gateway.processor.recent import RecentAnswers, call_key

from .conftest import gateway_config, shadow_of
from .test_mosquitto import MOSQUITTO, running_mosquitto
from .test_processor_hostile import next_frame
from .waiting import until

needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")

CLIENT_ID = "cpo:processor"


@pytest.fixture
async def mosquitto_20(tmp_path: Path) -> AsyncIterator[int]:
    """Mosquitto with its default in-flight window (20 QoS 1 messages per client), in memory."""
    async with running_mosquitto(
        tmp_path,
        "allow_anonymous true\npersistence false\nmax_queued_messages 0\n"
        "max_inflight_messages 20\nset_tcp_nodelay true\n",
    ) as port:
        yield port


class ProcessorInstance:
    """One processor "process": its own MQTT driver, cancel scope and answer cache."""

    def __init__(self, driver: MqttDriver, processor: Processor, scope: trio.CancelScope) -> None:
        self.driver = driver
        self.processor = processor
        self.scope = scope

    def kill(self) -> None:
        """What the broker sees of a SIGKILL: the socket closes, no DISCONNECT; then nothing runs any more."""
        links = list(self.driver._links)
        assert len(links) == 1
        links[0]._close_socket("killed")
        self.scope.cancel()


async def start_processor(nursery: trio.Nursery, port: int, iot_data: Any) -> ProcessorInstance:
    async def serve(
        task_status: trio.TaskStatus[ProcessorInstance] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with trio.CancelScope() as scope:
            async with open_mqtt_driver(MqttSettings(port=port)) as driver:
                processor = Processor(driver, iot_data, ProcessorSettings(client_id=CLIENT_ID))
                async with trio.open_nursery() as inner:
                    await inner.start(processor.run)
                    task_status.started(ProcessorInstance(driver, processor, scope))

    instance: ProcessorInstance = await nursery.start(serve)
    return instance


@needs_mosquitto
async def test_a_call_taken_by_a_killed_processor_is_answered_by_the_next_one(
    mosquitto_20: int,
    fakeiot: FakeIot,
    nursery: trio.Nursery,
    register: Callable[..., None],
    aws: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CALL the processor was handling when it died is answered, once, by its successor."""
    register("CPK")
    stalled = trio.Event()
    original = Context.update_shadow

    async def stall_first(self: Context, cp_id: str, reported: dict[str, Any]) -> None:
        if not stalled.is_set():
            stalled.set()
            await (
                trio.sleep_forever()
            )  # the processor dies here, after the handler ran, before it answered
        await original(self, cp_id, reported)

    monkeypatch.setattr(Context, "update_shadow", stall_first)
    gateway = await nursery.start(
        run_gateway, gateway_config(fakeiot, mqtt_port=mosquitto_20, processor=False)
    )
    first = await start_processor(nursery, mosquitto_20, aws[1])
    async with connect(gateway.url, "CPK") as cp:
        action, payload = boot_notification(
            "2.0.1", vendor="V", model="M", serial="S", firmware="F"
        )
        await cp.send_text(json.dumps([2, "boot-k", action, payload]))
        with trio.fail_after(10):
            await stalled.wait()
        first.kill()
        second = await start_processor(nursery, mosquitto_20, aws[1])
        answer = await next_frame(cp, timeout=10)
        assert answer[:2] == [3, "boot-k"] and answer[2]["status"] == "Accepted"
        # Exactly one answer: the next frame the CP gets answers its next CALL.
        await cp.send_text('[2,"hb-k","Heartbeat",{}]')
        assert (await next_frame(cp))[:2] == [3, "hb-k"]
    assert shadow_of(aws, "CPK")["state"]["reported"]["chargingStation"]["model"] == "M"
    assert second.processor.handled >= 2


@needs_mosquitto
async def test_answered_and_dropped_messages_are_acknowledged(
    mosquitto_20: int, fakeiot: FakeIot, nursery: trio.Nursery, aws: Any
) -> None:
    """Every message taken is acknowledged once done with: 100 CALLs and 100 frames that get no answer
    pass through Mosquitto's window of 20, and a successor processor is given none of them again."""
    first = await start_processor(nursery, mosquitto_20, aws[1])
    async with open_mqtt_driver(MqttSettings(port=mosquitto_20)) as cps, cps.link("CPA") as cp:
        await cp.subscribe("CPA/out", 1)
        for n in range(100):
            await cp.publish("CPA/in", f'[2,"hb-{n}","Heartbeat",{{}}]'.encode())
            await cp.publish(
                "CPA/in", f'[3,"result-{n}",{{}}]'.encode()
            )  # dropped: nothing to answer
        with trio.fail_after(20):
            ids = sorted([json.loads((await cp.receive())[1])[1] for _ in range(100)])
        assert ids == sorted(f"hb-{n}" for n in range(100))
        await until(lambda: first.processor.handled >= 200, timeout=10)
        first.kill()
        second = await start_processor(nursery, mosquitto_20, aws[1])
        await cp.publish("CPA/in", b'[2,"after","Heartbeat",{}]')
        with trio.fail_after(10):
            assert json.loads((await cp.receive())[1])[1] == "after"
        assert second.processor.handled == 1


async def test_a_duplicate_call_gets_the_same_answer_and_is_handled_once(
    gateway: Any, mqtt_driver: MqttDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend client publishes the same StartTransaction twice: one transaction id, sent twice."""
    runs = 0
    original = gateway.processor.handlers.get("1.6", "StartTransaction")

    async def counting(call: Call) -> dict[str, Any]:
        nonlocal runs
        runs += 1
        return await original(call)

    gateway.processor.handlers.register("1.6", "StartTransaction", counting)
    start = b'[2,"tx-1","StartTransaction",{"connectorId":1,"idTag":"T","meterStart":0,"timestamp":"2024-01-01T00:00:00Z"}]'
    async with mqtt_driver.link("test:backend") as link:
        await link.subscribe("CP1/out", 1)
        # The processor learns the OCPP version as from the gateway; the same client's messages arrive in order.
        await link.publish(
            "$aws/things/CP1/shadow/update", b'{"state":{"reported":{"ocppProtocol":"ocpp1.6"}}}'
        )
        await link.publish("CP1/in", start)
        with trio.fail_after(10):
            first = (await link.receive())[1]
        await link.publish("CP1/in", start)
        await link.publish("CP1/in", start)
        with trio.fail_after(10):
            again = [(await link.receive())[1] for _ in range(2)]
    assert json.loads(first)[:2] == [3, "tx-1"] and "transactionId" in json.loads(first)[2]
    assert again == [first, first]
    assert runs == 1
    assert gateway.processor is not None and gateway.processor.duplicates == 2


async def test_a_duplicate_arriving_while_the_first_is_answered_waits_for_its_answer(
    gateway: Any, mqtt_driver: MqttDriver, monkeypatch: pytest.MonkeyPatch, aws: Any
) -> None:
    """Handled concurrently, the second copy of a CALL does not run the handler again: it gets the first's answer."""
    runs = 0
    release = trio.Event()
    original_handler = gateway.processor.handlers.get("2.0.1", "BootNotification")
    original_update = Context.update_shadow

    async def counting(call: Call) -> dict[str, Any]:
        nonlocal runs
        runs += 1
        return await original_handler(call)

    async def slow_update(self: Context, cp_id: str, reported: dict[str, Any]) -> None:
        await release.wait()
        await original_update(self, cp_id, reported)

    gateway.processor.handlers.register("2.0.1", "BootNotification", counting)
    monkeypatch.setattr(Context, "update_shadow", slow_update)
    action, payload = boot_notification("2.0.1", vendor="V", model="M2", serial="S", firmware="F")
    boot = json.dumps([2, "boot-d", action, payload]).encode()
    async with mqtt_driver.link("test:backend") as link:
        await link.subscribe("CP2/out", 1)
        await link.publish("CP2/in", boot)
        await link.publish("CP2/in", boot)
        # The second copy is waiting for the first (the frames arrive through paho's thread).
        await until(lambda: runs > 0 and gateway.processor.duplicates > 0, timeout=10)
        release.set()
        with trio.fail_after(10):
            answers = [(await link.receive())[1] for _ in range(2)]
    assert answers[0] == answers[1] and json.loads(answers[0])[:2] == [3, "boot-d"]
    assert runs == 1
    assert gateway.processor.duplicates == 1


def test_recent_answers_are_bounded_by_age_and_count() -> None:
    recent = RecentAnswers(capacity=3, ttl=10.0)
    keys = [call_key("CP1", str(n), f'[2,"{n}","Heartbeat",{{}}]'.encode()) for n in range(5)]
    for n, key in enumerate(keys[:3]):
        recent.put(key, f"answer {n}", now=float(n))
    assert recent.get(keys[0], now=5.0) == "answer 0"
    recent.put(keys[3], "answer 3", now=6.0)  # over capacity: the oldest goes
    assert recent.get(keys[0], now=6.0) is None and len(recent) == 3
    assert recent.get(keys[1], now=10.9) == "answer 1"
    assert (
        recent.get(keys[1], now=11.0) is None
    )  # made at 1.0: expired 10 s later (a hit does not extend it)
    assert recent.get(keys[2], now=11.9) == "answer 2"
    recent.put(
        keys[4], "answer 4", now=16.5
    )  # what expired meanwhile (made at 2.0 and 6.0) goes too
    assert len(recent) == 1 and recent.get(keys[4], now=16.5) == "answer 4"


def test_the_same_id_with_other_bytes_is_another_call() -> None:
    """Some CPs restart their message ids on reconnect: a new CALL under an old id is not a duplicate."""
    assert call_key("CP1", "1", b'[2,"1","Heartbeat",{}]') == call_key(
        "CP1", "1", b'[2,"1","Heartbeat",{}]'
    )
    assert call_key("CP1", "1", b'[2,"1","Heartbeat",{}]') != call_key(
        "CP1", "1", b'[2,"1","Authorize",{"idTag":"T"}]'
    )
    assert call_key("CP1", "1", b'[2,"1","Heartbeat",{}]') != call_key(
        "CP2", "1", b'[2,"1","Heartbeat",{}]'
    )


async def test_a_delivery_is_acknowledged_only_on_its_own_link(mqtt_driver: MqttDriver) -> None:
    async with mqtt_driver.link("test:a") as a, mqtt_driver.link("test:b") as b:
        await a.subscribe("CPX/in", 1)
        await b.publish("CPX/in", b"x")
        with trio.fail_after(5):
            delivery = await a.receive(ack=False)
        assert (delivery.topic, delivery.payload) == ("CPX/in", b"x")
        with pytest.raises(ValueError):
            b.ack(delivery)
        a.ack(delivery)
