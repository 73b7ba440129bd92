"""Example: send every OCPP 2.0.1 TransactionEvent to the CPO's billing service.

Run the processor with ``--handlers billing_handlers`` (this file on
PYTHONPATH) and ``BILLING_URL`` set to the billing service's endpoint.  The
charge point still gets the default answer (idTokenInfo from the authorizer);
a billing service that is down turns into CALLERROR InternalError, so the
charge point retries the event later (OCPP 2.0.1 E13).
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

import trio

from gateway.processor.defaults_201 import transaction_event as default_answer
from gateway.processor.handlers import Call, handler


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@handler("2.0.1", "TransactionEvent")
async def transaction_event(call: Call) -> dict[str, Any]:
    event = {
        "chargePoint": call.cp_id,
        "messageId": call.message_id,
        "eventType": call.payload["eventType"],
        "transactionId": call.payload["transactionInfo"]["transactionId"],
        "meterValue": call.payload.get("meterValue", []),
    }
    # urllib blocks: run it in a worker thread, so other CALLs are answered meanwhile.
    await trio.to_thread.run_sync(_post, os.environ["BILLING_URL"], json.dumps(event).encode())
    return await default_answer(call)
