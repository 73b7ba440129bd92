"""``python -m gateway --workers N``: N worker processes serving one port, and their supervisor.

A gateway process uses one core.  With ``--workers N`` above 1 the process
started by the operator serves nothing itself: it starts N workers
(``python -m gateway.worker``, gateway/worker.py), each a whole gateway with
its own MQTT connections and registry cache, all listening on the same port
with SO_REUSEPORT (gateway/reuseport.py), and looks after them:

* the port: bound first here, without listening (:func:`reserve_port`), so
  that ``--port 0`` picks one port for all and a port already taken is
  reported before any worker starts;
* start-up: "listening on" is printed once every worker serves.  A worker
  that stops before serving (a bad setting, an unreachable certificate, the
  port taken by another user) stops them all; the supervisor exits with
  status 2 and the worker's error.  Never a restart loop;
* a worker that exits once serving (killed, crashed, out of memory) is
  logged with its exit status and started again, at most once per
  :data:`RESTART_INTERVAL` seconds; its charge points reconnect, as to any
  gateway that went away, and land on the live workers;
* stopping: SIGTERM or SIGINT is passed on to every worker as SIGTERM; each
  drains (its CPs closed with 1001, within ``--drain-timeout``) and prints
  its summary.  A worker still running ``--drain-timeout`` +
  :data:`STOP_MARGIN` seconds later is killed.  Exit status 0 when every
  worker stopped cleanly, 1 otherwise;
* if the supervisor itself dies, each worker sees its stdin end and drains;
* metrics: with ``--metrics-port P`` worker i serves ``/metrics``, ``/healthz`` and
  ``/readyz`` on port P + i - 1 (:func:`worker_config`), its own figures; the supervisor
  serves none.

Workers run in their own session: a Ctrl-C at a terminal reaches the
supervisor only, which passes it on once.
"""

from __future__ import annotations

import logging
import math
import pickle
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import trio

from .config import GatewayConfig
from .errors import WorkerFailed, leaves
from .reuseport import port_of, reserve_port
from .worker_pipes import Assignment, decode

log = logging.getLogger(__name__)

RESTART_INTERVAL = 1.0  # seconds: a worker that keeps dying is started at most this often
STOP_MARGIN = 5.0  # seconds a worker has beyond --drain-timeout to finish stopping


def describe_exit(code: int) -> str:
    """A process's exit status as an operator reads it."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


@dataclass
class _Worker:
    number: int
    total: int
    process: trio.Process | None = None
    started_at: float = -math.inf
    serving: bool = False

    @property
    def label(self) -> str:
        return f"worker {self.number}/{self.total}"


class Supervisor:
    """Starts, restarts and stops the workers of one gateway (see the module's docstring)."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.workers = [
            _Worker(number, config.runtime.workers)
            for number in range(1, config.runtime.workers + 1)
        ]
        self.stopping = False
        self.clean = True  # every worker that exited while stopping did so with status 0
        self._announced = False

    async def run(self, port: int) -> None:
        """Until every worker has stopped; raises WorkerFailed if one could not start."""
        config = replace(self.config, port=port)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._stop_on_signal, signals, nursery)
                async with trio.open_nursery() as workers:
                    for worker in self.workers:
                        workers.start_soon(self._keep, worker, config)
                nursery.cancel_scope.cancel()

    async def _stop_on_signal(self, signals: AsyncIterator[int], nursery: trio.Nursery) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if self.stopping:
                log.info("received %s: already stopping", name)
                continue
            log.info("received %s: stopping %d workers", name, len(self.workers))
            self.stopping = True
            for worker in self.workers:
                _terminate(worker)
            nursery.start_soon(self._kill_after, self.config.drain_timeout + STOP_MARGIN)

    async def _kill_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                log.error("%s still running %g s after SIGTERM: killing it", worker.label, seconds)
                worker.process.kill()

    async def _keep(self, worker: _Worker, config: GatewayConfig) -> None:
        """Run ``worker``, and again whenever it exits once serving, until stopping."""
        while not self.stopping:
            wait = worker.started_at + RESTART_INTERVAL - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
                if self.stopping:
                    return
            code = await self._run_once(worker, config)
            if self.stopping:
                if code != 0 and worker.serving:  # one still starting may die of the SIGTERM
                    self.clean = False
                    log.warning("%s stopped with %s", worker.label, describe_exit(code))
                return
            log.error(
                "%s exited unexpectedly (%s): starting it again", worker.label, describe_exit(code)
            )

    async def _run_once(self, worker: _Worker, config: GatewayConfig) -> int:
        """Start ``worker`` and wait for it to exit; its status.  WorkerFailed: it never served."""
        worker.started_at = trio.current_time()
        worker.serving = False
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "gateway.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        worker.process = process
        assert process.stdin is not None and process.stdout is not None
        errors: list[str] = []
        try:
            if self.stopping:  # a stop that came while it was being started
                _terminate(worker)
            assignment = Assignment(
                worker_config(config, worker.number), worker.number, worker.total
            )
            try:
                await process.stdin.send_all(pickle.dumps(assignment))
            except trio.BrokenResourceError:
                pass  # it exited at once: its status says why
            buffer = b""
            async for chunk in process.stdout:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._on_message(worker, decode(line), errors)
            code = await process.wait()
        finally:
            # Cancelled (another worker failed to start): stop this one too, bounded, then close its pipes.
            with trio.CancelScope(shield=True):
                await _stop_process(worker, self.config.drain_timeout + STOP_MARGIN)
                await process.stdin.aclose()
                await process.stdout.aclose()
        if not worker.serving and not self.stopping:
            raise WorkerFailed(
                worker.label, errors or [f"exited with {describe_exit(code)} before serving"]
            )
        return code

    def _on_message(self, worker: _Worker, message: dict[str, str], errors: list[str]) -> None:
        if "ready" in message:
            worker.serving = True
            pid = worker.process.pid if worker.process is not None else "?"
            log.info("%s serving%s (pid %s)", worker.label, " again" * self._announced, pid)
            if not self._announced and all(w.serving for w in self.workers):
                self._announced = True
                print(
                    f"OCPP gateway listening on {message['ready']}/<charge-point-id> "
                    f"({worker.total} workers)",
                    flush=True,
                )
        elif "error" in message:
            errors.append(message["error"])
        elif "stopped" in message:
            print(f"gateway stopped: {worker.label}: {message['stopped']}", flush=True)
        else:
            print(f"{worker.label}: {message.get('output', message)}", flush=True)


def worker_config(config: GatewayConfig, number: int) -> GatewayConfig:
    """Worker ``number``'s configuration: its own metrics port, ``--metrics-port`` + number - 1
    (each worker has its own figures; 0 stays 0: any free port, in the worker's log)."""
    port = config.metrics.port
    if not port:
        return config
    return replace(config, metrics_port=port + number - 1)


def _terminate(worker: _Worker) -> None:
    if worker.process is not None and worker.process.returncode is None:
        worker.process.send_signal(signal.SIGTERM)


async def _stop_process(worker: _Worker, timeout: float) -> None:
    """Make sure the worker's process has exited: SIGTERM, then SIGKILL after ``timeout``."""
    process = worker.process
    if process is None or process.returncode is not None:
        return
    _terminate(worker)
    with trio.move_on_after(timeout):
        await process.wait()
    if process.returncode is None:
        log.error("%s still running %g s after SIGTERM: killing it", worker.label, timeout)
        process.kill()
        await process.wait()


def supervise(config: GatewayConfig) -> int:
    """Run ``config.runtime.workers`` workers until stopped; the process's exit status."""
    server = config.server
    try:
        reserved = reserve_port(server.host, server.port)
    except OSError as exc:
        print(f"error: cannot listen on {server.host}:{server.port}: {exc}", file=sys.stderr)
        return 2
    supervisor = Supervisor(config)
    try:
        with reserved[0]:
            try:
                trio.run(supervisor.run, port_of(reserved))
            finally:
                for sock in reserved[1:]:
                    sock.close()
    except BaseException as exc:  # noqa: BLE001 - re-raised unless workers failed to start
        failed = leaves(exc)
        if not all(isinstance(error, WorkerFailed) for error in failed):
            raise
        for error in failed:
            print(f"error: {error}", file=sys.stderr)
        return 2
    return 0 if supervisor.clean else 1
