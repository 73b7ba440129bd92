"""Running fakeiot: the MQTT broker, the HTTP API and the store, with owned threads.

amqtt is asyncio; the gateway is Trio.  So fakeiot runs its broker on an
asyncio event loop in a thread of its own, and its HTTP API in the standard
library's threading server.  :class:`FakeIot` starts both (``start()``
returns once both accept connections) and stops and joins both
(``stop()``).  :func:`running_fakeiot` does the same from Trio.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from .api import IotApi
from .api_server import ApiServer
from .broker import FakeIotBroker
from .certs import CertificateAuthority, ensure_pki
from .config import FakeIotConfig, check_exposure, stored_secret
from .console import Console
from .console_commands import check_command_api_url
from .console_tap import ConsoleTap
from .datadir import DataDirLock, prepare_data_dir
from .errors import FakeIotError
from .limits import DeliveryLimits
from .listeners import TlsListener, broker_config
from .policy import Credentials
from .rules import LambdaRunner, RuleError, RulesEngine, load_rules_file
from .security import CERTIFICATE_KIND
from .shadow_service import Publication, ShadowService
from .store import Store

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)


def _why(exc: BaseException) -> str:
    """An OS error in a few words ("Address already in use"), not asyncio's long sentence."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc)


class FakeIot:
    """fakeiot in this process.  ``start()`` and ``stop()`` block; call them from one thread."""

    def __init__(self, config: FakeIotConfig) -> None:
        self.config = config
        self.store: Store | None = None
        self.broker: FakeIotBroker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._api_server: ApiServer | None = None
        self._api_thread: threading.Thread | None = None
        self._stop_broker: asyncio.Event | None = None
        self.mqtt_port = 0
        self.tls_port: int | None = None
        self.api_port = 0
        self.rules: RulesEngine | None = None
        self.lambdas: LambdaRunner | None = None
        self.ca: CertificateAuthority | None = None
        self.ca_file: Path | None = None
        self.backend_password = ""
        self.gateway_password = ""
        self._lock: DataDirLock | None = None
        self.tap = ConsoleTap()  # the console's live feed of every delivered message
        self._metrics_lock = threading.Lock()
        # fakeiot.metrics' registry, made on the first scrape
        self._metrics_registry: CollectorRegistry | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.config.host}:{self.api_port}"

    def start(self) -> None:
        """Start the broker and the API; raises :class:`FakeIotError` (one line: why) if either cannot.

        The data directory is locked until :meth:`stop` (:mod:`fakeiot.datadir`).
        """
        check_exposure(self.config)
        try:
            limits = self.config.delivery_limits
        except ValueError as exc:
            raise FakeIotError(str(exc)) from None
        prepare_data_dir(self.config.data_dir)
        self._lock = DataDirLock(self.config.data_dir)
        self._lock.acquire()
        try:
            self._start(limits)
        except BaseException:
            self._stop_lambdas()
            self._lock.release()
            raise

    def _start(self, limits: DeliveryLimits) -> None:
        try:
            self.store = Store(self.config.database)
        except (OSError, sqlite3.Error) as exc:
            raise FakeIotError(f"cannot open the database {self.config.database}: {exc}") from None
        try:
            self.backend_password = stored_secret(
                self.config.backend_password, self.config.backend_password_file
            )
            self.gateway_password = stored_secret(
                self.config.gateway_password, self.config.gateway_password_file
            )
            self.ca, pki = ensure_pki(self.config.certs_dir)
            self.ca_file = pki["ca"].cert
            self.lambdas = LambdaRunner(
                dict(self.config.lambda_functions),
                concurrency=self.config.lambda_concurrency,
                queue_size=self.config.lambda_queue,
                timeout=self.config.lambda_timeout,
            )
            self.lambdas.start()  # imports the functions: LambdaError (a ValueError) if one fails
            self.rules = RulesEngine(self.store, self.lambdas)
            if self.config.rules_file is not None:
                for name, payload in load_rules_file(self.config.rules_file).items():
                    self.rules.put(name, payload, replace=True)
        except (OSError, ValueError, RuleError) as exc:
            self.store.close()
            raise FakeIotError(str(exc)) from None
        tls = None
        if self.config.tls_port is not None:
            tls = TlsListener(
                self.config.tls_port, pki["ca"].cert, pki["server"].cert, pki["server"].key
            )
        shadows = ShadowService(self.store)
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop_thread = threading.Thread(
            target=self._run_broker,
            args=(shadows, tls, limits, ready, failure),
            name="fakeiot-broker",
            daemon=False,
        )
        self._loop_thread.start()
        ready.wait()
        if failure:
            self._loop_thread.join()
            self.store.close()
            raise FakeIotError(
                f"fakeiot MQTT broker cannot listen on {self.config.host}:{self.config.mqtt_port}"
                f"{f' / TLS {self.config.tls_port}' if tls else ''}: {_why(failure[0])}"
            )
        api = IotApi(
            self.store,
            shadows,
            self._publish_threadsafe,
            region=self.config.region,
            account_id=self.config.account_id,
            rules=self.rules,
            ca=self.ca,
            endpoint=f"{self.config.host}:{self.tls_port or self.mqtt_port}",
        )
        try:
            keys = (
                {self.config.api_access_key_id: self.config.api_secret_access_key or ""}
                if self.config.api_access_key_id
                else None
            )
            self._api_server = ApiServer(
                (self.config.host, self.config.api_port),
                api,
                access_keys=keys,
                read_timeout=self.config.api_read_timeout,
                max_connections=self.config.api_max_connections,
            )
        except OSError as exc:
            self._stop_broker_thread()
            self.store.close()
            raise FakeIotError(
                f"fakeiot HTTP API cannot listen on {self.config.host}:{self.config.api_port}: {_why(exc)}"
            ) from None
        if self.config.console:
            self._api_server.console = Console(
                api,
                self.tap,
                access_keys=keys,
                connected_clients=self.connected_client_ids,
                command_api_url=self.config.command_api_url,
            )
        self._api_server.metrics = self._metrics_exposition
        self.api_port = self._api_server.server_address[1]
        self._api_thread = threading.Thread(
            target=self._api_server.serve_forever, name="fakeiot-api", daemon=False
        )
        self._api_thread.start()
        log.info(
            "fakeiot: MQTT on %s:%d%s, API on %s, data in %s",
            self.config.host,
            self.mqtt_port,
            f", MQTT over mutual TLS on {self.tls_port} (CA {self.ca_file})"
            if self.tls_port
            else "",
            self.api_url,
            self.config.data_dir,
        )
        if self.config.console:
            log.info(
                "fakeiot: web console on %s/console%s",
                self.api_url,
                " (HTTP Basic: the API's access key id and secret)" if keys else "",
            )

    def stop(self) -> None:
        self._stop_lambdas()  # first: the functions running now still reach the API and broker
        self.tap.close()  # ends the console's live streams, whose threads the API server joins
        if self._api_server is not None and self._api_thread is not None:
            self._api_server.shutdown()
            self._api_server.server_close()
            self._api_thread.join()
            self._api_server = None
        self._stop_broker_thread()
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _stop_lambdas(self) -> None:
        if self.lambdas is not None:
            self.lambdas.stop()
            self.lambdas = None

    def _stop_broker_thread(self) -> None:
        if self._loop is not None and self._stop_broker is not None:
            self._loop.call_soon_threadsafe(self._stop_broker.set)
        if self._loop_thread is not None:
            self._loop_thread.join()
            self._loop_thread = None

    def _certificate_status(self, certificate_id: str) -> str | None:
        store = self.store
        doc = store.get_resource(CERTIFICATE_KIND, certificate_id) if store is not None else None
        return None if doc is None else str(doc.get("status"))

    def _run_broker(
        self,
        shadows: ShadowService,
        tls: TlsListener | None,
        limits: DeliveryLimits,
        ready: threading.Event,
        failure: list[BaseException],
    ) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop_broker = asyncio.Event()
            broker = FakeIotBroker(
                broker_config(self.config.host, self.config.mqtt_port, tls),
                shadows,
                credentials=Credentials(
                    self.backend_password,
                    self.gateway_password,
                    self.config.allow_anonymous_devices,
                ),
                rules=self.rules,
                certificate_status=self._certificate_status,
                limits=limits,
                tap=self.tap if self.config.console else None,
            )
            try:
                await broker.start()
            except Exception as exc:  # amqtt wraps every start failure in BrokerError
                failure.append(exc.__cause__ or exc)
                ready.set()
                return
            self.broker = broker
            self.mqtt_port = broker.bound_port
            if tls is not None:
                self.tls_port = broker.bound_port_of("tls")
            ready.set()
            await self._stop_broker.wait()
            await broker.shutdown()

        try:
            asyncio.run(main())
        finally:
            ready.set()

    def _metrics_exposition(self, accept: str) -> tuple[bytes, str]:
        """``GET /metrics`` (an API thread): fakeiot/metrics.py, imported on the first scrape."""
        from .metrics import FakeIotCollector, exposition, fakeiot_registry

        with self._metrics_lock:
            if self._metrics_registry is None:
                assert self.broker is not None and self._api_server is not None
                self._metrics_registry = fakeiot_registry(
                    FakeIotCollector(
                        self.broker, self._api_server.api, self.rules, self.connected_clients
                    )
                )
            registry = self._metrics_registry
        return exposition(registry, accept)

    def use_command_api(self, url: str) -> None:
        """Point the console's Commands page at the processor's command API (``url``)."""
        console = None if self._api_server is None else self._api_server.console
        if console is not None:
            console.command_api_url = check_command_api_url(url)

    def connected_client_ids(self) -> list[str] | None:
        """The MQTT client ids connected now, read on the broker's loop (None: it did not answer)."""
        loop, broker = self._loop, self.broker
        if loop is None or broker is None or loop.is_closed():
            return None

        async def read() -> list[str]:
            return broker.connected_client_ids()

        try:
            return asyncio.run_coroutine_threadsafe(read(), loop).result(timeout=5)
        except (TimeoutError, RuntimeError):
            return None

    def connected_clients(self) -> int | None:
        """MQTT clients connected now, counted on the broker's loop (None: it did not answer)."""
        ids = self.connected_client_ids()
        return None if ids is None else len(ids)

    def _publish_threadsafe(self, publications: list[Publication]) -> None:
        """Publish from an API thread through the broker's loop, and wait for it."""
        loop, broker = self._loop, self.broker
        if loop is None or broker is None:
            return

        async def send() -> None:
            for topic, payload in publications:
                await broker.internal_message_broadcast(topic, payload)

        asyncio.run_coroutine_threadsafe(send(), loop).result(timeout=10)


@asynccontextmanager
async def running_fakeiot(config: FakeIotConfig) -> AsyncIterator[FakeIot]:
    """Run fakeiot for the duration of the block (from Trio)."""
    iot = FakeIot(config)
    await trio.to_thread.run_sync(iot.start)
    try:
        yield iot
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(iot.stop)
