"""fakeiot's configuration (``FAKEIOT_*`` / ``--...``), its generated secrets, and what it refuses
to expose beyond loopback."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FakeIotError
from .hostcheck import is_loopback
from .limits import DeliveryLimits


@dataclass(frozen=True)
class FakeIotConfig:
    """Where fakeiot listens and keeps its data (``FAKEIOT_*`` / ``--...``)."""

    host: str = "127.0.0.1"
    mqtt_port: int = 1883
    api_port: int = 8090
    data_dir: Path = Path.home() / ".local" / "share" / "fakeiot"
    region: str = "us-east-1"
    account_id: str = "000000000000"
    tls_port: int | None = None  # None: no TLS listener; 8883 is AWS IoT's
    pki_dir: Path | None = None  # None: <data-dir>/certs (made on first use)
    backend_password: str | None = field(
        default=None, repr=False
    )  # None: <data-dir>/backend-password (made on first use)
    # The gateway's MQTT credential (user fakeiot-gateway) for device clients on the plain listener,
    # what the gateway's certificate is on AWS IoT.  None: <data-dir>/gateway-password (made on first use).
    gateway_password: str | None = field(default=None, repr=False)
    allow_anonymous_devices: bool = (
        False  # development only; refused unless `host` is a loopback address
    )
    # SigV4 keys the HTTP API checks requests against; required to bind a non-loopback address.
    api_access_key_id: str | None = None
    api_secret_access_key: str | None = field(default=None, repr=False)
    api_read_timeout: float = (
        20.0  # seconds a request's headers and body may take, and a connection may idle
    )
    # HTTP connections served at once (one thread each); one more is answered 503 and closed.
    api_max_connections: int = 128
    rules_file: Path | None = None
    console: bool = True  # the web console on the API port (fakeiot/console.py)
    command_api_url: str | None = None  # the processor's command API, for the console's Commands
    # Per connected client (see fakeiot/limits.py): unacknowledged QoS 1 messages (AWS IoT: 100), and the
    # queue behind them; beyond it messages for that client are dropped (logged, counted).
    max_inflight: int = 100
    max_queued_messages: int = 1000
    max_queued_bytes: int = 8 * 1024 * 1024
    # The rules' lambda action (fakeiot/rules/lambdas.py): function ARN -> "module:function", and
    # the bounds of the pool that runs them (beyond concurrency + queue: throttled, dropped).
    lambda_functions: tuple[tuple[str, str], ...] = ()
    lambda_concurrency: int = 4
    lambda_queue: int = 100
    lambda_timeout: float = 30.0

    @property
    def delivery_limits(self) -> DeliveryLimits:
        return DeliveryLimits(self.max_inflight, self.max_queued_messages, self.max_queued_bytes)

    @property
    def database(self) -> Path:
        return self.data_dir / "fakeiot.sqlite3"

    @property
    def certs_dir(self) -> Path:
        return self.pki_dir or self.data_dir / "certs"

    @property
    def backend_password_file(self) -> Path:
        return self.data_dir / "backend-password"

    @property
    def gateway_password_file(self) -> Path:
        return self.data_dir / "gateway-password"


def stored_secret(given: str | None, path: Path) -> str:
    """``given``, or the password kept in ``path`` (made once, mode 0600)."""
    if given:
        return given
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def check_exposure(config: FakeIotConfig) -> None:
    """Refuse what is safe only on a loopback address (raises :class:`FakeIotError`)."""
    if (config.api_access_key_id is None) != (config.api_secret_access_key is None):
        raise FakeIotError("give both --api-access-key-id and --api-secret-access-key, or neither")
    if is_loopback(config.host):
        return
    if config.allow_anonymous_devices:
        raise FakeIotError(
            f"--allow-anonymous-devices is a development switch, accepted only when fakeiot binds a loopback address "
            f"(127.0.0.1, ::1, localhost), not {config.host!r}: anyone reaching the port could take any charge point's connection"
        )
    if config.api_access_key_id is None:
        raise FakeIotError(
            f"binding {config.host!r} (not a loopback address) needs --api-access-key-id and --api-secret-access-key: "
            "the HTTP API then accepts only requests signed with them (AWS SigV4, as boto3 signs)"
        )
