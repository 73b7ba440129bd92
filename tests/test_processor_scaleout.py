"""N message processors behind one MQTT shared subscription (``--shared-group``): every CALL is answered
exactly once, by one of them, and killing one loses nothing.

Over real sockets, on fakeiot and on Mosquitto 2.  The processors run in this process (each with its
own MQTT driver); a "killed" one has its MQTT socket closed without a DISCONNECT and its tasks
cancelled: what the broker sees of a SIGKILL (as in test_processor_delivery.py).

Where a killed replica's unacknowledged CALLs go differs: fakeiot hands them to another online member
of the group at once; Mosquitto keeps them in the killed replica's persistent session until a
replica with its client id connects again (so a replica must come back under its own client id).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from fakeiot import FakeIot
from gateway.app import run_gateway
from gateway.mqtt_link import MqttDriver, MqttSettings, open_mqtt_driver
from gateway.processor import Processor, ProcessorSettings
from gateway.processor.command_service import CommandService, CommandSettings
from gateway.processor.commands import CallAnswered
from gateway.processor.service import inbound_topic
from iotshared.identity import validate_identity

from .conftest import backend_settings, gateway_config
from .processes import program
from .test_commands_e2e import charge_point
from .test_mosquitto import MOSQUITTO, running_mosquitto
from .waiting import until

needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")

GROUP = "procs"
CPS = ("SCALE1", "SCALE2", "SCALE3", "SCALE4")


class Stalling(Processor):
    """A processor that answers ``answer_first`` CALLs, then takes CALLs without ever answering them.

    ``answered``: what it answered.  Killed, it may not have acknowledged the last of those yet,
    and the broker then delivers them again (at least once): only those may be answered twice.
    """

    answer_first = 5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stalled = 0
        self.taken = 0
        self.answered: set[tuple[str, str]] = set()

    async def _handle(self, link: Any, topic: str, payload: bytes) -> None:
        if (
            self.taken >= self.answer_first
        ):  # decided on arrival: no more than answer_first answered
            self.stalled += 1
            await trio.sleep_forever()
        self.taken += 1
        await super()._handle(link, topic, payload)
        self.answered.add((topic.split("/")[0], json.loads(payload)[1]))


class Replica:
    """One processor "process": its own MQTT driver and cancel scope."""

    def __init__(self, driver: MqttDriver, processor: Processor, scope: trio.CancelScope) -> None:
        self.driver = driver
        self.processor = processor
        self.scope = scope

    def kill(self) -> None:
        links = list(self.driver._links)
        assert len(links) == 1
        links[0]._close_socket("killed")
        self.scope.cancel()


async def start_replica(
    nursery: trio.Nursery,
    mqtt: MqttSettings,
    iot_data: Any,
    client_id: str,
    kind: type[Processor] = Processor,
) -> Replica:
    settings = ProcessorSettings(client_id=client_id, shared_group=GROUP)

    async def serve(task_status: trio.TaskStatus[Replica] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            async with open_mqtt_driver(mqtt) as driver:
                processor = kind(driver, iot_data, settings)
                async with trio.open_nursery() as inner:
                    await inner.start(processor.run)
                    task_status.started(Replica(driver, processor, scope))

    replica: Replica = await nursery.start(serve)
    return replica


class Answers:
    """Every answer on ``<cp>/out``, counted by (CP, message id)."""

    def __init__(self) -> None:
        self.count: Counter[tuple[str, str]] = Counter()

    async def run(self, driver: MqttDriver, *, task_status: trio.TaskStatus[None]) -> None:
        async with driver.link("answers-spy") as link:
            await link.subscribe("+/out", 1)
            task_status.started()
            while True:
                topic, payload = await link.receive()
                frame = json.loads(payload)
                assert frame[0] == 3, frame  # a CALLRESULT, never a CALLERROR
                self.count[(topic.split("/")[0], frame[1])] += 1

    def check_exactly_once(
        self, sent: list[tuple[str, str]], may_repeat: set[tuple[str, str]] = frozenset()
    ) -> None:
        """Each CALL answered, once; twice only for those in ``may_repeat`` (a killed replica's)."""
        missing = [key for key in sent if key not in self.count]
        duplicated = {
            key: n for key, n in self.count.items() if n > 1 and (key not in may_repeat or n > 2)
        }
        assert not missing, f"{len(missing)} CALLs unanswered, e.g. {missing[:3]}"
        assert not duplicated, f"answered more than once: {list(duplicated.items())[:3]}"
        assert set(self.count) == set(sent)


async def send_calls(driver: MqttDriver, per_cp: int, start: int = 0) -> list[tuple[str, str]]:
    """``per_cp`` Heartbeat CALLs from each CP, interleaved; their (CP, message id)s."""
    sent = []
    async with driver.link("cps") as link:
        for n in range(start, start + per_cp):
            for cp in CPS:
                message_id = f"hb-{n}"
                await link.publish(
                    f"{cp}/in", json.dumps([2, message_id, "Heartbeat", {}]).encode()
                )
                sent.append((cp, message_id))
    return sent


def speak_201(aws: tuple[Any, Any]) -> None:
    """The CPs' shadows say OCPP 2.0.1, as the gateway records it."""
    for cp in CPS:
        thing = validate_identity(cp).thing_name
        document = {"state": {"reported": {"ocppProtocol": "ocpp2.0.1"}}}
        aws[1].update_thing_shadow(thingName=thing, payload=json.dumps(document).encode())


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[int]:
    """Mosquitto 2 (shared subscriptions), its default in-flight window of 20, in memory."""
    async with running_mosquitto(
        tmp_path,
        "allow_anonymous true\npersistence false\nmax_queued_messages 0\nset_tcp_nodelay true\n",
    ) as port:
        yield port


def test_the_replicas_subscribe_a_shared_topic() -> None:
    assert inbound_topic(ProcessorSettings()) == "+/in"
    assert inbound_topic(ProcessorSettings(shared_group="g1")) == "$share/g1/+/in"


async def test_two_replicas_on_fakeiot_answer_every_call_once_and_share_the_load(
    fakeiot: FakeIot, nursery: trio.Nursery, aws: Any
) -> None:
    speak_201(aws)
    mqtt = backend_settings(fakeiot)
    replicas = [await start_replica(nursery, mqtt, aws[1], f"cpo:processor:{n}") for n in (1, 2)]
    answers = Answers()
    async with open_mqtt_driver(mqtt) as driver:
        await nursery.start(answers.run, driver)
        sent = await send_calls(driver, 25)
        await until(lambda: len(answers.count) >= len(sent), timeout=20)
        await trio.sleep(0.3)  # a duplicate would have come by now
        answers.check_exactly_once(sent)
        # fakeiot's round-robin: half each
        assert [r.processor.handled for r in replicas] == [50, 50]
    nursery.cancel_scope.cancel()


async def test_a_killed_replica_on_fakeiot_loses_nothing(
    fakeiot: FakeIot, nursery: trio.Nursery, aws: Any
) -> None:
    speak_201(aws)
    mqtt = backend_settings(fakeiot)
    dying = await start_replica(nursery, mqtt, aws[1], "cpo:processor:1", Stalling)
    survivor = await start_replica(nursery, mqtt, aws[1], "cpo:processor:2")
    answers = Answers()
    async with open_mqtt_driver(mqtt) as driver:
        await nursery.start(answers.run, driver)
        sent = await send_calls(driver, 50)
        stalling = dying.processor
        assert isinstance(stalling, Stalling)
        await until(lambda: stalling.stalled >= 10, timeout=20)
        dying.kill()  # with CALLs taken and not answered
        sent += await send_calls(driver, 10, start=50)  # and more after it died
        await until(lambda: len(answers.count) >= len(sent), timeout=20)
        await trio.sleep(0.3)
        # The killed one never answered what it held; what it had answered may come again.
        answers.check_exactly_once(sent, may_repeat=stalling.answered)
        handled = survivor.processor.handled + stalling.handled
        assert len(sent) <= handled <= len(sent) + len(stalling.answered)
    nursery.cancel_scope.cancel()


@needs_mosquitto
async def test_two_replicas_on_mosquitto_answer_every_call_once(
    mosquitto: int, nursery: trio.Nursery, aws: Any
) -> None:
    speak_201(aws)
    mqtt = MqttSettings(port=mosquitto)
    replicas = [await start_replica(nursery, mqtt, aws[1], f"cpo:processor:{n}") for n in (1, 2)]
    answers = Answers()
    async with open_mqtt_driver(mqtt) as driver:
        await nursery.start(answers.run, driver)
        sent = await send_calls(driver, 25)
        await until(lambda: len(answers.count) >= len(sent), timeout=20)
        await trio.sleep(0.3)
        answers.check_exactly_once(sent)
        assert sum(r.processor.handled for r in replicas) == len(sent)
    nursery.cancel_scope.cancel()


@needs_mosquitto
async def test_a_killed_replica_on_mosquitto_loses_nothing_once_it_is_back(
    mosquitto: int, nursery: trio.Nursery, aws: Any
) -> None:
    """Mosquitto keeps what the killed replica held in its persistent session: its successor under the
    same client id gets it."""
    speak_201(aws)
    mqtt = MqttSettings(port=mosquitto)
    dying = await start_replica(nursery, mqtt, aws[1], "cpo:processor:1", Stalling)
    await start_replica(nursery, mqtt, aws[1], "cpo:processor:2")
    answers = Answers()
    async with open_mqtt_driver(mqtt) as driver:
        await nursery.start(answers.run, driver)
        sent = await send_calls(driver, 25)
        stalling = dying.processor
        assert isinstance(stalling, Stalling)
        await until(lambda: stalling.stalled >= 10, timeout=20)
        dying.kill()
        sent += await send_calls(driver, 10, start=25)
        await start_replica(nursery, mqtt, aws[1], "cpo:processor:1")  # back, under its own id
        await until(lambda: len(answers.count) >= len(sent), timeout=20)
        await trio.sleep(0.3)
        answers.check_exactly_once(sent, may_repeat=stalling.answered)
    nursery.cancel_scope.cancel()


async def test_sigkill_of_a_replica_process_on_fakeiot_loses_no_call(
    fakeiot: FakeIot, nursery: trio.Nursery, aws: Any, tmp_path: Path
) -> None:
    """``python -m gateway.processor --shared-group`` twice; one is SIGKILLed while CALLs flow."""
    speak_201(aws)
    password = tmp_path / "backend-password"
    password.write_text(fakeiot.backend_password)
    common = (
        *("-m", "gateway.processor", "--mqtt-port", str(fakeiot.mqtt_port)),
        *("--iot-api-url", fakeiot.api_url, "--mqtt-username", "fakeiot-backend"),
        *("--mqtt-password-file", str(password), "--shared-group", GROUP),
    )
    answers = Answers()
    with (
        program(*common, "--client-id", "cpo:processor:1") as first,
        program(*common, "--client-id", "cpo:processor:2") as second,
    ):
        for replica in (first, second):
            line = await trio.to_thread.run_sync(replica.wait_for_line, "processor: answering")
            assert f"$share/{GROUP}/+/in" in line, line
        async with open_mqtt_driver(backend_settings(fakeiot)) as driver:
            await nursery.start(answers.run, driver)
            sent: list[tuple[str, str]] = []

            async def publish() -> None:
                sent.extend(await send_calls(driver, 100))

            async with trio.open_nursery() as calls:
                calls.start_soon(publish)
                await until(lambda: len(answers.count) >= 40, timeout=20)
                first.proc.kill()  # SIGKILL, CALLs in flight
            await until(lambda: len(answers.count) >= len(sent), timeout=30)
            # at-least-once: a CALL answered just before the kill may be answered again; none is lost
            assert set(answers.count) == set(sent)
            assert second.proc.poll() is None
    nursery.cancel_scope.cancel()


async def test_commands_are_answered_whichever_replica_the_cp_reply_reaches(
    fakeiot: FakeIot, nursery: trio.Nursery, aws: Any, register: Any
) -> None:
    """The command sender reads the CP's answer on ``<cp>/in`` itself (not shared): the replica
    that also gets the CALLRESULT through the group ignores it, whichever one that is."""
    register("CMD1")
    mqtt = backend_settings(fakeiot)
    replicas = [await start_replica(nursery, mqtt, aws[1], f"cpo:processor:{n}") for n in (1, 2)]
    gateway = await nursery.start(run_gateway, gateway_config(fakeiot, processor=False))
    async with (
        open_mqtt_driver(mqtt) as driver,
        charge_point(gateway, aws, "CMD1") as cp,
    ):
        service = CommandService(
            driver, aws[0], aws[1], CommandSettings(client_id="test:cmd", timeout=10.0)
        )
        await nursery.start(service.run)
        for n in range(6):  # round-robin: the CALLRESULTs reach both replicas in turn
            outcome = await service.call("CMD1", "Reset", {"type": "Immediate"})
            assert isinstance(outcome, CallAnswered), (n, outcome)
            assert outcome.payload == {"status": "Accepted"}
        # Both replicas took some of the CP's CALLRESULTs from the group (so the sender's answers
        # did not depend on which one got them) and sent the CP nothing back for them.
        await until(lambda: sum(r.processor.handled for r in replicas) == 6, what="all 6 taken")
        assert all(r.processor.handled >= 1 for r in replicas), [
            r.processor.handled for r in replicas
        ]
        assert [f[0] for f in cp.received] == [2] * 6
    nursery.cancel_scope.cancel()
