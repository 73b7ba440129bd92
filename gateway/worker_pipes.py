"""What travels between the supervisor of ``--workers N`` and its workers (see gateway/worker.py).

In a module of its own so that both sides unpickle the same class: the worker runs as
``__main__``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .config import GatewayConfig


@dataclass(frozen=True)
class Assignment:
    """What the supervisor tells a worker: its configuration (the port already chosen)."""

    config: GatewayConfig
    number: int  # 1-based
    total: int

    @property
    def label(self) -> str:
        return f"worker {self.number}/{self.total}"


def encode(**message: str) -> bytes:
    """One line of the worker -> supervisor protocol."""
    return json.dumps(message).encode() + b"\n"


def decode(line: bytes) -> dict[str, str]:
    """A line of the protocol -> its message; a line that is not one -> ``{"output": line}``."""
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict) or not all(isinstance(v, str) for v in message.values()):
        return {"output": line.decode(errors="replace")}
    return message
