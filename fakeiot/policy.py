"""fakeiot's IoT-policy-like access control: who may publish, subscribe, receive what.

AWS IoT Core attaches policies to certificates; the gateway's policy (see
``scripts/provision.py``) confines each MQTT client to its own topics with
the ``${iot:ClientId}`` policy variable.  fakeiot enforces the same rules
without a policy language (pure functions, no I/O):

* a *device* client (every client without the backend role) with client id
  ``C`` may publish to ``C/in`` and to its own shadow topics
  ``$aws/things/T/shadow/...``, and subscribe to / receive ``C/out`` and its
  own shadow topics, where ``T`` is ``C`` or the Thing name the gateway
  derives from ``C`` (``CP.1`` -> ``CP:2E1``);
* the *backend* role (the message processor, operators' tools) may do
  anything.  A client gets it by connecting with the user name
  :data:`BACKEND_USERNAME` and fakeiot's backend password.

What AWS does on a refusal, fakeiot does too: a refused PUBLISH closes the
client's connection (presence ``disconnectReason`` ``FORBIDDEN_ACCESS``),
a refused SUBSCRIBE gets the SUBACK failure code 0x80, and messages a
client may not receive are not delivered to it.
"""

from __future__ import annotations

from enum import Enum

from gateway.errors import InvalidIdentity
from gateway.identity import thing_name_for

BACKEND_USERNAME = "fakeiot-backend"


class Role(Enum):
    DEVICE = "device"
    BACKEND = "backend"


def _things(client_id: str) -> set[str]:
    names = {client_id}
    try:
        names.add(thing_name_for(client_id))
    except InvalidIdentity:
        pass
    return names


def _own_shadow_topic(client_id: str, topic: str) -> bool:
    levels = topic.split("/")
    return len(levels) >= 4 and levels[0] == "$aws" and levels[1] == "things" and levels[3] == "shadow" and levels[2] in _things(client_id)


def may_publish(role: Role, client_id: str, topic: str) -> bool:
    if role is Role.BACKEND:
        return True
    return topic == f"{client_id}/in" or _own_shadow_topic(client_id, topic)


def may_receive(role: Role, client_id: str, topic: str) -> bool:
    if role is Role.BACKEND:
        return True
    return topic == f"{client_id}/out" or _own_shadow_topic(client_id, topic)


def may_subscribe(role: Role, client_id: str, topic_filter: str) -> bool:
    """A device may only subscribe to filters that match nothing but its own topics."""
    if role is Role.BACKEND:
        return True
    if topic_filter == f"{client_id}/out":
        return True
    levels = topic_filter.split("/")
    # $aws/things/<own thing>/shadow/... - wildcards allowed only after "shadow"
    return (
        len(levels) >= 4
        and levels[:2] == ["$aws", "things"]
        and levels[2] in _things(client_id)
        and levels[3] == "shadow"
    )
