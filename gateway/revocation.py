"""Revocation: a connected charge point whose Thing is deleted, or whose credentials change, is closed.

The registry check happens when a CP connects; without this a deleted Thing
or a changed password would leave the live connection served for as long as
it lasts, and new connections accepted for the cache's TTL.

AWS IoT (with registry events enabled: ``UpdateEventConfigurations``
``THING``) and fakeiot publish ``$aws/events/thing/<thing-name>/updated``
and ``.../deleted``.  :class:`RegistryWatch` subscribes to them through one
MQTT connection of the gateway's own (client id ``gateway:events:<n>``:
never a charge point id, since ``:`` is not allowed in those) and, for each
event about a connected CP, looks the Thing up afresh:

* gone: the CP is closed with 1008 ``Charge point deregistered``;
* its security profile or password hash differs from what the CP was
  admitted with: closed with 1008 ``Credentials changed``, so it must
  connect (and authenticate) again.

Events published while the watch's connection was down are lost (MQTT keeps
nothing for a new client id), so after every re-subscription the watch looks
up each connected CP afresh, one at a time (the registry's pacing applies).

Where the broker refuses that subscription (an IoT policy without it), the
watch says so once and re-checks every connected CP every
``fallback_interval`` seconds instead, through the registry's paced,
cached look-ups: slower, but no revocation waits for a reconnect.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

import trio

from .errors import (
    CLOSE_POLICY_VIOLATION,
    MqttConnectError,
    MqttConnectionLost,
    MqttConnectRefused,
    MqttSubscriptionRefused,
    only_error,
)
from .identity import cp_id_for

if TYPE_CHECKING:
    from .mqtt_link import MqttDriver
    from .session import Bridge

log = logging.getLogger(__name__)

EVENT_FILTERS = ("$aws/events/thing/+/updated", "$aws/events/thing/+/deleted")
DEREGISTERED_REASON = "Charge point deregistered"
CREDENTIALS_CHANGED_REASON = "Credentials changed; connect again"


def thing_of_event(topic: str) -> str | None:
    """The Thing name in ``$aws/events/thing/<name>/<operation>``, or None."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[:3] == ["$aws", "events", "thing"] and parts[3]:
        return parts[3]
    return None


class RegistryWatch:
    def __init__(
        self, bridge: Bridge, driver: MqttDriver, *, fallback_interval: float = 300.0
    ) -> None:
        self._bridge = bridge
        self._driver = driver
        self._fallback_interval = fallback_interval
        self.events = 0
        self.revoked = 0
        self.subscribed = False  # the events connection is up and subscribed
        self.fallback = False  # events refused: re-checking by polling (no connection held)
        self.subscriptions = 0  # successful (re)subscriptions since start

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled; ``started()`` at once (the gateway does not wait for the broker)."""
        task_status.started()
        failures = 0
        while True:
            try:
                try:
                    await self._watch_events()
                except BaseExceptionGroup as group:  # one error from inside the link's nursery
                    raise only_error(group) from None
            except (MqttSubscriptionRefused, MqttConnectRefused) as exc:
                log.warning(
                    "registry events unavailable (%s): re-checking connected charge points every %g s instead; "
                    "on AWS IoT allow iot:Subscribe/iot:Receive on $aws/events/thing/* for the gateway",
                    exc,
                    self._fallback_interval,
                )
                self.fallback = True
                await self._recheck_forever()
            except Exception as exc:  # noqa: BLE001 - whatever ends one attempt must never end the gateway
                failures += 1
                delay = random.uniform(0, min(30.0, 0.5 * 2 ** min(failures, 10)))
                if isinstance(exc, (MqttConnectError, MqttConnectionLost)):
                    log.info("registry events: %s; retrying in %.1f s", exc, delay)
                else:
                    log.exception("registry events: unexpected error; retrying in %.1f s", delay)
                await trio.sleep(delay)
            self.subscribed = False

    async def _watch_events(self) -> None:
        async with self._driver.link(f"gateway:events:{random.getrandbits(48):012x}") as link:
            for topic_filter in EVENT_FILTERS:
                await link.subscribe(topic_filter, 1)
            self.subscribed = True
            self.subscriptions += 1
            log.debug("registry events: subscribed")
            async with trio.open_nursery() as nursery:
                if self.subscriptions > 1:
                    # Events may have been missed while the connection was down.
                    nursery.start_soon(self._recheck_all)
                while True:
                    topic, _ = await link.receive()
                    thing_name = thing_of_event(topic)
                    if thing_name is not None:
                        self.events += 1
                        await self.revalidate(thing_name)

    async def _recheck_all(self) -> None:
        sessions = self._bridge.sessions.all()
        log.info("registry events: re-subscribed; re-checking %d connected CP(s)", len(sessions))
        for session in sessions:
            await self.revalidate(session.identity.thing_name)

    async def _recheck_forever(self) -> None:
        while True:
            await trio.sleep(self._fallback_interval)
            for session in self._bridge.sessions.all():
                await self.revalidate(session.identity.thing_name, fresh=False)

    async def revalidate(self, thing_name: str, *, fresh: bool = True) -> None:
        """Close the CP of ``thing_name`` if its Thing is gone or its credentials changed."""
        bridge = self._bridge
        if fresh:
            bridge.registry.forget(thing_name)
        try:
            cp_id = cp_id_for(thing_name)
        except ValueError:
            return
        session = bridge.sessions.get(cp_id)
        if session is None:
            return
        try:
            attributes = await bridge.registry.lookup(thing_name)
        except Exception as exc:  # a registry outage must not close anyone, nor end the watch
            log.info("%s: could not re-check the registry: %s", cp_id, exc, extra={"cp_id": cp_id})
            return
        if attributes is None:
            reason = DEREGISTERED_REASON
        elif bridge.credential_fingerprint(attributes) != session.credentials:
            reason = CREDENTIALS_CHANGED_REASON
        else:
            return
        if bridge.sessions.get(cp_id) is session:
            self.revoked += 1
            log.warning(
                "%s: %s; closing its connection", cp_id, reason.lower(), extra={"cp_id": cp_id}
            )
            session.end(CLOSE_POLICY_VIOLATION, reason)
