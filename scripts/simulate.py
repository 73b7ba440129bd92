#!/usr/bin/env python3
"""Simulate one OCPP charge point: it boots, sends Heartbeats and answers the central system.

    python scripts/simulate.py --url ws://127.0.0.1:8080 --cp-id CP1 [--ocpp 1.6|2.0.1] [--heartbeats N]
        [--connectors N] [--meter-interval S] [--power KW] [--call-timeout S] [--status-at-boot] [--quiet]

Same flags as the AWS sample's simulator, plus the ones above.  It answers the commands an
operator sends most (2.0.1 RequestStartTransaction, RequestStopTransaction, Reset,
GetVariables, SetVariables, ChangeAvailability, TriggerMessage, UnlockConnector; 1.6
RemoteStartTransaction, RemoteStopTransaction, Reset, GetConfiguration, ChangeConfiguration,
ChangeAvailability, TriggerMessage, UnlockConnector) and runs the transaction a remote start
asks for, with meter values every --meter-interval seconds.  Logs every frame sent and received
(--quiet: only one line per step).  Exits 0 after N heartbeats (or runs until interrupted);
exits 1 with the close code and reason when the central system refuses or drops the connection.
See docs/simulator.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio  # noqa: E402

from scripts.simulator import Identity, Simulator, SimulatorConfig  # noqa: E402


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", required=True, help="central system URL, e.g. ws://127.0.0.1:8080")
    p.add_argument(
        "--cp-id", required=True, help="charge point identity (appended to the URL path)"
    )
    p.add_argument("--cp-serial", default="SN-0001", help="serial number in BootNotification")
    p.add_argument("--cp-model", default="CHARGE-MODEL-1", help="model in BootNotification")
    p.add_argument("--cp-version", default="1.0.0", help="firmware version in BootNotification")
    p.add_argument("--cp-vendor", default="ACME", help="vendor in BootNotification")
    p.add_argument(
        "--ocpp", choices=["1.6", "2.0.1"], default="2.0.1", help="OCPP version to speak"
    )
    p.add_argument(
        "--password",
        default=None,
        help="HTTP Basic auth password (OCPP security profile 1); also SIMULATE_PASSWORD",
    )
    p.add_argument(
        "--ca-file", default=None, help="CA certificate to trust for wss:// (default: the system's)"
    )
    p.add_argument(
        "--heartbeats",
        type=int,
        default=None,
        help="stop after this many heartbeats (default: run forever)",
    )
    p.add_argument(
        "--connectors",
        type=_positive_int,
        default=1,
        help="connectors (1.6) / EVSEs with one connector each (2.0.1) (default: 1)",
    )
    p.add_argument(
        "--meter-interval",
        type=_seconds,
        default=10.0,
        help="seconds between meter values during a transaction (default: 10); "
        "MeterValueSampleInterval / SampledDataCtrlr.TxUpdatedInterval can change it",
    )
    p.add_argument(
        "--power", type=_seconds, default=11.0, metavar="KW", help="charging power (default: 11 kW)"
    )
    p.add_argument(
        "--call-timeout",
        type=_seconds,
        default=30.0,
        help="seconds to wait for the central system's answer to a CALL (default: 30)",
    )
    p.add_argument(
        "--status-at-boot",
        action="store_true",
        help="send a StatusNotification for each connector after the BootNotification",
    )
    p.add_argument("--quiet", action="store_true", help="log one line per step, not every frame")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        url=args.url,
        cp_id=args.cp_id,
        version=args.ocpp,
        identity=Identity(args.cp_vendor, args.cp_model, args.cp_serial, args.cp_version),
        password=args.password or os.environ.get("SIMULATE_PASSWORD"),
        ssl_context=ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None,
        heartbeats=args.heartbeats,
        connectors=args.connectors,
        meter_interval=args.meter_interval,
        power_kw=args.power,
        call_timeout=args.call_timeout,
        status_at_boot=args.status_at_boot,
        log_frames=not args.quiet,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        config = config_from(args)
    except (OSError, ssl.SSLError) as exc:
        print(f"simulate.py: cannot read --ca-file {args.ca_file}: {exc}", file=sys.stderr)
        return 2
    try:
        return trio.run(Simulator(config).run)
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        # Ctrl-C reaches whichever task was waiting: it may come wrapped in a nursery's group.
        if isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is None:
            raise
        logging.getLogger("simulate").info("%s: interrupted, connection closed", args.cp_id)
        return 130


if __name__ == "__main__":
    sys.exit(main())
