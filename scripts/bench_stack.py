"""The processes behind scripts/bench.py: fakeiot, a broker, the processor, our gateway, the load test.

``Stack`` starts fakeiot (registry and shadows; also the broker for amqtt runs), Mosquitto (plain TCP and,
with ``tls=True``, a second listener with fakeiot's development certificates that asks for the client's
certificate), and the message processor; our gateway is started per run with ``Stack.gateway``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from cost_per_cp import free_port, start  # noqa: E402

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)


class Stack:
    """fakeiot + broker + processor; gateways started per run."""

    def __init__(self, broker: str, tmp: Path, *, tls: bool = False) -> None:
        self.broker, self.tmp, self.tls = broker, tmp, tls
        self.tls_port: int | None = None  # Mosquitto's TLS listener (tls=True)
        self.certs = tmp / "certs"
        self.procs: list[subprocess.Popen[str]] = []
        self.api_port, self.amqtt_port = free_port(), free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.mqtt_port = self.amqtt_port
        self.processor_output: list[str] = []
        self.processor_loop: dict[str, float] | None = None
        # fakeiot's broker wants the gateway's credential from device clients (one per CP); Mosquitto here none.
        self.gateway_credentials: list[str] = []
        self.device_username: str | None = None
        self.device_password: str | None = None

    def __enter__(self) -> Stack:
        data = self.tmp / f"iot-{self.broker}"
        self.procs.append(
            start(
                [
                    sys.executable,
                    "-m",
                    "fakeiot",
                    "--mqtt-port",
                    str(self.amqtt_port),
                    "--api-port",
                    str(self.api_port),
                    "--data-dir",
                    str(data),
                ],
                "fakeiot: MQTT",
            )
        )
        credentials = [
            "--mqtt-username",
            "fakeiot-backend",
            "--mqtt-password-file",
            str(data / "backend-password"),
        ]
        self.gateway_credentials = [
            "--mqtt-username",
            "fakeiot-gateway",
            "--mqtt-password-file",
            str(data / "gateway-password"),
        ]
        self.device_username, self.device_password = (
            "fakeiot-gateway",
            (data / "gateway-password").read_text().strip(),
        )
        if self.broker == "mosquitto":
            assert MOSQUITTO, "mosquitto is not installed"
            self.mqtt_port = free_port()
            conf = self.tmp / "mosquitto.conf"
            text = (
                f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
                "max_inflight_messages 100\nset_tcp_nodelay true\nlog_dest stderr\n"
            )
            if self.tls:
                # fakeiot's development CA, server certificate (for 127.0.0.1) and the gateway's client one.
                subprocess.run(
                    [sys.executable, "-m", "fakeiot", "certs", "--out", str(self.certs)]
                    + ["--client", "gateway"],
                    cwd=ROOT,
                    check=True,
                    capture_output=True,
                )
                self.tls_port = free_port()
                # Run as this user (no switch to "mosquitto" when started as root): the key lives in our
                # private temporary directory.
                text = (
                    f"user {getpass.getuser()}\n"
                    + text
                    + (
                        f"listener {self.tls_port} 127.0.0.1\ncafile {self.certs / 'ca.pem'}\n"
                        f"certfile {self.certs / 'server.pem'}\nkeyfile {self.certs / 'server.key'}\n"
                        "require_certificate true\ntls_version tlsv1.2\n"
                    )
                )
            conf.write_text(text)
            self.procs.append(start([MOSQUITTO, "-c", str(conf)], "running"))
            credentials, self.gateway_credentials = [], []
            self.device_username = self.device_password = None
        self.procs.append(
            start(
                [
                    sys.executable,
                    "-m",
                    "gateway.processor",
                    "--mqtt-port",
                    str(self.mqtt_port),
                    "--iot-api-url",
                    self.api_url,
                    "--log-level",
                    "WARNING",
                    *credentials,
                ],
                "processor: answering",
                keep=self.processor_output,
            )
        )
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        time.sleep(0.2)  # the drain thread reads the processor's last lines
        self.processor_loop = loop_figures(self.processor_output)
        print(f"processor ({self.broker} runs): {self.processor_loop}", flush=True)

    @contextmanager
    def gateway(
        self,
        output: list[str] | None = None,
        *,
        tls: bool = False,
        metrics_port: int | None = None,
    ) -> Iterator[tuple[str, int]]:
        """A gateway process for one run; its output lines (its stop summary included) go to ``output``.

        ``tls``: to Mosquitto's TLS listener with the gateway's client certificate, as to AWS IoT Core.
        ``metrics_port``: serve /metrics there (``--metrics-port``)."""
        port = free_port()
        metrics = [] if metrics_port is None else ["--metrics-port", str(metrics_port)]
        broker = ["--mqtt-host", "127.0.0.1", "--mqtt-port", str(self.mqtt_port)]
        if tls:
            assert self.tls_port is not None, "Stack(tls=True) for a TLS gateway"
            broker = [
                "--iot-endpoint",
                f"127.0.0.1:{self.tls_port}",
                "--ca-file",
                str(self.certs / "ca.pem"),
                "--cert-file",
                str(self.certs / "client-gateway.pem"),
                "--key-file",
                str(self.certs / "client-gateway.key"),
            ]
        proc = start(
            [
                sys.executable,
                "-m",
                "gateway",
                "--port",
                str(port),
                *broker,
                "--iot-api-url",
                self.api_url,
                "--no-processor",
                "--log-level",
                "WARNING",
                "--mqtt-connect-rate",
                "500",
                "--mqtt-connect-burst",
                "500",
                "--max-message-rate",
                "0",
                "--max-connections",
                "20000",
                # The Things are registered before the gateway starts: it lists them at start, as a
                # CPO's gateway would before its fleet reconnects.
                "--registry-prefetch",
                *self.gateway_credentials,
                *metrics,
            ],
            "listening on",
            keep=output,
        )
        try:
            time.sleep(1.0)
            yield f"ws://127.0.0.1:{port}", proc.pid
        finally:
            stop(proc)
            time.sleep(0.3)  # the drain thread reads the gateway's last lines (its stop summary)

    def register(self, prefix: str, n: int) -> None:
        run_loadtest(
            [
                "--url",
                "ws://unused",
                "--cps",
                str(n),
                "--prefix",
                prefix,
                "--register",
                "--api-url",
                self.api_url,
                "--duration",
                "0.001",
                "--rate",
                "1",
                "--quiet",
            ],
            register_only=True,
        )


LOOP_LINE = re.compile(
    r"event loop lag max (\d+) ms, mean ([\d.]+) ms, (\d+) stalls over (\d+) ms; "
    r"full GCs (\d+) \(max (\d+) ms\)(?:, young GCs max (\d+) ms)?"
)


def loop_figures(lines: list[str]) -> dict[str, float] | None:
    """The event-loop summary a gateway or processor prints when it stops (gateway/looplag.py).

    Warnings and errors it logged are shown too (at most 20 lines)."""
    problems = [line.rstrip() for line in lines if " WARNING " in line or " ERROR " in line]
    for line in problems[:20]:
        print(f"  | {line}", flush=True)
    if len(problems) > 20:
        print(f"  | ... {len(problems) - 20} more", flush=True)
    for line in reversed(lines):
        found = LOOP_LINE.search(line)
        if found:
            lag_max, lag_mean, stalls, threshold, full_gcs, gc_max, young_max = found.groups()
            return {
                "lag_max_ms": float(lag_max),
                "lag_mean_ms": float(lag_mean),
                "stalls": int(stalls),
                "stall_threshold_ms": float(threshold),
                "full_gcs": int(full_gcs),
                "full_gc_max_ms": float(gc_max),
                "young_gc_max_ms": float(young_max or 0),
            }
    return None


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_loadtest(args: list[str], *, register_only: bool = False) -> dict[str, Any]:
    """scripts/loadtest.py as a subprocess; returns its JSON figures."""
    if register_only:
        # Register through the load test's own code path, without running load.
        from loadtest import register  # noqa: PLC0415

        ns = argparse.Namespace(api_url=args[args.index("--api-url") + 1])
        prefix, n = args[args.index("--prefix") + 1], int(args[args.index("--cps") + 1])
        register(ns, [f"{prefix}{i}" for i in range(n)])
        return {}
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [
            sys.executable,
            str(ROOT / "scripts" / "loadtest.py"),
            *args,
            "--json",
            out.name,
            "--quiet",
        ]
        print("+ " + " ".join(command[1:]), flush=True)
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        print(done.stdout, flush=True)
        if done.returncode not in (0, 1):
            raise SystemExit(f"loadtest failed: {done.stderr[-2000:]}")
        return json.loads(Path(out.name).read_text())  # type: ignore[no-any-return]
