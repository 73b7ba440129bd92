"""The exceptions of :mod:`iotshared`: each says, in its ``str()``, what is wrong in a few words."""

from __future__ import annotations


class IotSharedError(Exception):
    """Base class of every error :mod:`iotshared` raises on purpose."""


class InvalidIdentity(IotSharedError, ValueError):
    """A charge point identity that the rules of :mod:`iotshared.identity` refuse.

    ``reason`` is a sentence fit for a WebSocket close frame or a CLI error.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PasswordRejected(IotSharedError, ValueError):
    """A password that OCPP does not allow."""


class JsonRejected(IotSharedError, ValueError):
    """Text refused as JSON; ``str()`` says why in a few words."""


class JsonTooDeep(JsonRejected):
    """Arrays and objects nest deeper than the limit."""
