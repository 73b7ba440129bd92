"""A simulated OCPP 1.6 / 2.0.1 charge point (``scripts/simulate.py`` is its command line).

- :mod:`.station`: its state (connectors, availability, meters, settings), no I/O;
- :mod:`.v16`, :mod:`.v201`: each version's answers to the central system and its messages;
- :mod:`.link`: OCPP-J over one WebSocket (validation, one CALL at a time, CALLERRORs);
- :mod:`.runner`: connect, boot, heartbeats, transactions, reboots.
"""

from .messages import Identity
from .runner import Simulator, SimulatorConfig

__all__ = ["Identity", "Simulator", "SimulatorConfig"]
