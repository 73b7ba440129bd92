"""The gateway's exception hierarchy.

Each error that ends a charge point's connection carries what the edge needs
to answer it: a WebSocket close code and a human-readable reason.
"""

from __future__ import annotations

from iotshared import errors as shared_errors

# WebSocket close codes (RFC 6455 section 7.4.1) the gateway uses.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008
CLOSE_ABNORMAL = 1006  # never sent; recorded when a connection drops without a close frame
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013

# A close frame holds at most 125 payload bytes: 2 for the code, 123 for the reason.
MAX_CLOSE_REASON_BYTES = 123


def clip_reason(reason: str) -> str:
    """Shorten ``reason`` so that it fits in a WebSocket close frame."""
    data = reason.encode("utf-8")
    if len(data) <= MAX_CLOSE_REASON_BYTES:
        return reason
    clipped = data[: MAX_CLOSE_REASON_BYTES - 3].decode("utf-8", errors="ignore")
    return clipped + "..."


def only_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a nursery wrapped, when it is the only one; else the group itself."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def leaves(exc: BaseException) -> list[BaseException]:
    """The individual errors inside (possibly nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration (flags or environment) is invalid."""


class ConnectionRefused(GatewayError):
    """A charge point's connection must be closed; carries the close frame.

    ``cause`` names the kind of refusal in a few fixed words (a metric label: never the CP id
    nor anything else a client chooses).
    """

    close_code: int = CLOSE_POLICY_VIOLATION
    cause: str = "policy"

    def __init__(
        self, reason: str, *, close_code: int | None = None, cause: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = clip_reason(reason)
        if close_code is not None:
            self.close_code = close_code
        if cause is not None:
            self.cause = cause


class InvalidIdentity(ConnectionRefused, shared_errors.InvalidIdentity):
    """The identity in the URL path is not acceptable.

    Also an :class:`iotshared.errors.InvalidIdentity` (what the shared identity rules raise, and
    :func:`gateway.identity.validate_identity` turns into this class).
    """

    cause = "invalid_identity"


class NoSubprotocol(ConnectionRefused):
    """The charge point offered no OCPP version the gateway speaks."""

    close_code = CLOSE_PROTOCOL_ERROR
    cause = "no_subprotocol"


class UnknownChargePoint(ConnectionRefused):
    """The identity is not registered as an IoT Thing."""

    cause = "unknown_charge_point"

    def __init__(self, cp_id: str) -> None:
        super().__init__(f"Charge Point {cp_id} not registered as an IoT Thing")
        self.cp_id = cp_id


class RegistryUnavailable(ConnectionRefused):
    """The Thing registry could not be asked; the charge point should retry."""

    close_code = CLOSE_TRY_AGAIN_LATER
    cause = "registry_unavailable"


class ClientCertificateRefused(ConnectionRefused):
    """Security profile 3: the TLS client certificate is missing or does not belong to the CP."""

    cause = "client_certificate"


class MqttError(GatewayError):
    """Base class of MQTT-side failures."""


class MqttConnectError(MqttError, ConnectionRefused):
    """The broker could not be reached or refused the connection."""

    close_code = CLOSE_TRY_AGAIN_LATER
    cause = "mqtt_connect"


class MqttConnectRefused(MqttConnectError):
    """The broker answered CONNECT with a refusal (credentials, client id): retrying will not help."""


class MqttConnectionLost(MqttError):
    """An established MQTT connection ended without the gateway asking."""


class MqttSubscriptionRefused(MqttError):
    """The broker answered a SUBSCRIBE with a failure code (an ACL, typically)."""


class MqttBacklogExceeded(MqttConnectionLost):
    """More was received for a consumer than it took (``max_backlog_bytes``): the link was ended."""


class WorkerFailed(GatewayError):
    """A worker process of ``--workers N`` did not start serving: the supervisor stops them all."""

    def __init__(self, worker: str, reasons: list[str]) -> None:
        super().__init__(f"{worker}: {'; '.join(reasons)}")
        self.worker = worker
        self.reasons = reasons
