#!/usr/bin/env python3
"""What one registry look-up costs the gateway: its DescribeThing client's CPU and wall time per call.

    python scripts/bench_registry.py [--calls 300] [--things 100]

Starts fakeiot (its API on a free 127.0.0.1 port, in a child process), registers ``--things``
Things, then makes ``--calls`` DescribeThing calls one after another from this process with the
client the gateway builds (``gateway.aws.make_client``, cut down to DescribeThing), as a new
charge point's admission does.  Prints this process's CPU time and the wall time per call.
Each call is a new charge point's look-up (the gateway caches the answer afterwards), so the
figures bound how many new charge points a second one gateway process can look up.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from cost_per_cp import free_port, start  # noqa: E402

from gateway.aws import AwsSettings, make_client  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(
        prog="scripts/bench_registry.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--calls", type=int, default=300, help="DescribeThing calls to time")
    p.add_argument("--things", type=int, default=100, help="Things registered (called in turn)")
    args = p.parse_args()
    if args.calls < 1 or args.things < 1:
        p.error("--calls and --things must be positive")
    with tempfile.TemporaryDirectory() as tmp:
        api_port = free_port()
        api_url = f"http://127.0.0.1:{api_port}"
        fakeiot = start(
            [sys.executable, "-m", "fakeiot", "--mqtt-port", str(free_port())]
            + ["--api-port", str(api_port), "--data-dir", str(Path(tmp) / "iot")],
            "fakeiot: MQTT",
        )
        try:
            for i in range(args.things):
                request = urllib.request.Request(
                    f"{api_url}/things/BR{i}", data=b"{}", method="POST"
                )
                request.add_header("Content-Type", "application/json")
                urllib.request.urlopen(request, timeout=10).close()
            iot = make_client(
                AwsSettings(iot_endpoint_url=api_url), "iot", operations={"DescribeThing"}
            )
            iot.describe_thing(thingName="BR0")  # the connection pool's first connection
            cpu, wall = time.process_time(), time.perf_counter()
            for i in range(args.calls):
                iot.describe_thing(thingName=f"BR{i % args.things}")
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            fakeiot.terminate()
            fakeiot.wait(timeout=20)
    figures = {
        "calls": args.calls,
        "cpu_ms_per_call": round(1000 * cpu / args.calls, 2),
        "wall_ms_per_call": round(1000 * wall / args.calls, 2),
    }
    print(
        f"DescribeThing against fakeiot, {args.calls} calls one after another: "
        f"{figures['cpu_ms_per_call']} ms CPU and {figures['wall_ms_per_call']} ms wall per call"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
