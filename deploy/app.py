#!/usr/bin/env python3
"""The CDK app (``cdk.json``: ``python3 app.py``): ``npx cdk deploy [-c key=value ...]``.

See docs/deploying-aws.md for the context values.  A bad one stops here with a message naming it.
"""

from __future__ import annotations

import sys
from pathlib import Path

# iotshared (the gateway's IoT policy) without an installed checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ocpp_stack.settings import SettingsError  # noqa: E402
from ocpp_stack.stack import build_app  # noqa: E402


def main() -> int:
    try:
        app, _ = build_app()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
