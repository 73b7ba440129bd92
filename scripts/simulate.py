#!/usr/bin/env python3
"""Simulate one OCPP charge point: BootNotification, then Heartbeats.

    python scripts/simulate.py --url ws://127.0.0.1:8080 --cp-id CP1 [--ocpp 1.6|2.0.1] [--heartbeats N]

Same flags as the AWS sample's simulator, plus ``--ocpp`` and
``--heartbeats``.  Logs every frame sent and received.  Exits 0 after N
heartbeats (or runs until interrupted); exits 1 with the close code and
reason when the central system refuses or drops the connection.
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
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError  # noqa: E402

from gateway.chargepoint import CallErrorReceived, boot_notification, connect, heartbeat  # noqa: E402

log = logging.getLogger("simulate")


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
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    def on_frame(direction: str, text: str) -> None:
        log.info("%s: %s %s", args.cp_id, direction, text)

    subprotocol = "ocpp1.6" if args.ocpp == "1.6" else "ocpp2.0.1"
    try:
        password = args.password or os.environ.get("SIMULATE_PASSWORD")
        context = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None
        async with connect(
            args.url,
            args.cp_id,
            subprotocols=[subprotocol],
            password=password,
            ssl_context=context,
            on_frame=on_frame,
        ) as cp:
            action, payload = boot_notification(
                args.ocpp,
                vendor=args.cp_vendor,
                model=args.cp_model,
                serial=args.cp_serial,
                firmware=args.cp_version,
            )
            result = await cp.call(action, payload)
            log.info("%s: connected to central system", args.cp_id)
            if result.get("status") != "Accepted":
                log.error("%s: BootNotification not accepted: %s", args.cp_id, result)
                return 1
            interval = int(result["interval"])
            log.info("%s: heartbeat interval set to %d", args.cp_id, interval)
            sent = 0
            while args.heartbeats is None or sent < args.heartbeats:
                await trio.sleep(interval)
                await cp.call(*heartbeat())
                sent += 1
            return 0
    except ConnectionClosed as exc:
        log.error(
            "%s: connection closed by central system: code %s, reason %r",
            args.cp_id,
            exc.reason.code,
            exc.reason.reason,
        )
        return 1
    except ConnectionRejected as exc:
        log.error("%s: connection rejected by central system: HTTP %s", args.cp_id, exc.status_code)
        return 1
    except HandshakeError as exc:
        log.error("%s: WebSocket handshake failed: %s", args.cp_id, exc)
        return 1
    except CallErrorReceived as exc:
        log.error("%s: central system answered with CALLERROR %s", args.cp_id, exc)
        return 1
    except OSError as exc:
        log.error("%s: cannot connect to %s: %s", args.cp_id, args.url, exc)
        return 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        return trio.run(run, args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
