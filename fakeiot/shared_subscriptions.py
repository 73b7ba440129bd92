"""MQTT shared subscriptions (``$share/<group>/<filter>``): who is in which group, and which member
gets the next message.  Pure: no I/O, no broker; :mod:`fakeiot.broker_routing` calls it.

A SUBSCRIBE to ``$share/<group>/<filter>`` makes the client a member of the
group ``(<group>, <filter>)``; each message matching ``<filter>`` goes to ONE
member of each such group, chosen round-robin (AWS IoT Core, Mosquitto 2 and
MQTT 5 alike; amqtt 0.12.1 has no shared subscriptions).  The choice:

* the next member in turn that is *online* (connected and taking messages);
* none online: the next member in turn that holds a persistent session
  (clean session off), whose offline queue keeps the message (QoS 1) for its
  next connection, as for a normal subscription;
* none of those either: nobody, and the message is not delivered to the group
  (AWS IoT delivers to connected members only).

The same client may be in several groups, and may hold a normal subscription
to the same filter too: it then gets the message once for each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

SHARE_PREFIX = "$share/"


class InvalidSharedFilter(ValueError):
    """A ``$share/`` filter without a valid group name or topic filter (SUBACK failure)."""


@dataclass(frozen=True)
class SharedFilter:
    """``$share/<group>/<topic_filter>``, split."""

    group: str
    topic_filter: str

    def __str__(self) -> str:
        return f"{SHARE_PREFIX}{self.group}/{self.topic_filter}"


def parse_shared(topic_filter: str) -> SharedFilter | None:
    """The group and filter of a ``$share/`` filter; None for any other filter.

    Raises :class:`InvalidSharedFilter` for ``$share/`` without a group name, with a group name
    holding a wildcard (MQTT 5, 4.8.2), or without a topic filter after it.
    """
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    group, sep, rest = topic_filter[len(SHARE_PREFIX) :].partition("/")
    if not group or "+" in group or "#" in group:
        raise InvalidSharedFilter(
            f"{topic_filter[:80]!r}: the share name must be non-empty, no + or #"
        )
    if not sep or not rest:
        raise InvalidSharedFilter(f"{topic_filter[:80]!r}: no topic filter after the share name")
    return SharedFilter(group, rest)


def valid_filter(topic_filter: str) -> bool:
    """A filter amqtt would accept: ``#`` only as the whole last level, ``+`` only as a whole level."""
    levels = topic_filter.split("/")
    return all(
        ("#" not in level or (level == "#" and index == len(levels) - 1))
        and ("+" not in level or level == "+")
        for index, level in enumerate(levels)
    )


def underlying_filter(topic_filter: str) -> str:
    """The filter a subscription matches topics against: ``<filter>`` of ``$share/<group>/<filter>``,
    the filter itself otherwise (and for a malformed ``$share/`` filter, which then matches nothing a
    device may subscribe to)."""
    try:
        shared = parse_shared(topic_filter)
    except InvalidSharedFilter:
        return topic_filter
    return topic_filter if shared is None else shared.topic_filter


@dataclass
class SharedGroup:
    """The members of one group (client ids, in the order they joined, with their QoS) and whose turn
    is next."""

    key: SharedFilter
    members: list[tuple[str, int]] = field(default_factory=list)
    _next: int = 0

    def join(self, client_id: str, qos: int) -> None:
        for index, (member, _) in enumerate(self.members):
            if member == client_id:
                self.members[index] = (client_id, qos)  # a SUBSCRIBE again replaces the QoS
                return
        self.members.append((client_id, qos))

    def leave(self, client_id: str) -> bool:
        for index, (member, _) in enumerate(self.members):
            if member == client_id:
                del self.members[index]
                if index < self._next:
                    self._next -= 1
                return True
        return False

    def _in_turn(self) -> Iterator[tuple[int, tuple[str, int]]]:
        count = len(self.members)
        for step in range(count):
            index = (self._next + step) % count
            yield index, self.members[index]

    def choose(
        self,
        online: Callable[[str], bool],
        keeps_offline: Callable[[str], bool],
        *,
        excluding: str | None = None,
    ) -> tuple[str, int] | None:
        """The member (client id, QoS) that gets the next message, and its turn taken; None: nobody.

        ``online``: connected and taking messages; ``keeps_offline``: offline with a persistent
        session; ``excluding``: a member never chosen (the one whose messages are being handed on).
        """
        for wanted in (online, keeps_offline):
            for index, member in self._in_turn():
                if member[0] != excluding and wanted(member[0]):
                    self._next = (index + 1) % len(self.members)
                    return member
        return None


class SharedSubscriptions:
    """Every group of one broker, by ``(group, filter)``."""

    def __init__(self) -> None:
        self._groups: dict[SharedFilter, SharedGroup] = {}

    def __len__(self) -> int:
        return len(self._groups)

    def join(self, shared: SharedFilter, client_id: str, qos: int) -> None:
        self._groups.setdefault(shared, SharedGroup(shared)).join(client_id, qos)

    def leave(self, shared: SharedFilter, client_id: str) -> bool:
        group = self._groups.get(shared)
        if group is None or not group.leave(client_id):
            return False
        if not group.members:
            del self._groups[shared]
        return True

    def leave_all(self, client_id: str) -> int:
        return sum(self.leave(key, client_id) for key in list(self._groups))

    def group(self, shared: SharedFilter) -> SharedGroup | None:
        return self._groups.get(shared)

    def matching(self, topic: str, matches: Callable[[str, str], bool]) -> list[SharedGroup]:
        """The groups whose filter matches ``topic`` (``matches(topic, filter)``)."""
        return [group for key, group in self._groups.items() if matches(topic, key.topic_filter)]

    def clear(self) -> None:
        self._groups.clear()
