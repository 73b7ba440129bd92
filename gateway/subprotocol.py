"""OCPP-J subprotocol negotiation (pure).

OCPP-J names the OCPP version as a WebSocket subprotocol.  The client lists
what it speaks in ``Sec-WebSocket-Protocol``; the server picks one.  Real
chargers send sloppy headers (``, ocpp2.0.1``), so empty items are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .errors import NoSubprotocol

#: Subprotocol name -> the OCPP version whose schemas the processor uses.
#: ``ocpp2.0`` charge points are answered with OCPP 2.0.1 messages: the
#: message set the gateway handles is the same in both.
OCPP_VERSIONS = {"ocpp1.6": "1.6", "ocpp2.0": "2.0.1", "ocpp2.0.1": "2.0.1"}
DEFAULT_SUBPROTOCOLS = ("ocpp2.0.1", "ocpp2.0", "ocpp1.6")


def clean_offers(offered: Iterable[str]) -> list[str]:
    """Drop empty items and whitespace from the client's offer list."""
    return [item.strip() for item in offered if item and item.strip()]


def choose_subprotocol(offered: Iterable[str], supported: Sequence[str]) -> str:
    """Pick the first subprotocol in the client's order that we support.

    Raises :class:`NoSubprotocol` when there is none; per OCPP-J the server
    then completes the handshake without a subprotocol and closes.
    """
    offers = clean_offers(offered)
    for item in offers:
        if item in supported:
            return item
    wanted = ", ".join(supported)
    if not offers:
        raise NoSubprotocol(
            f"No OCPP subprotocol offered in Sec-WebSocket-Protocol; this server speaks {wanted}"
        )
    raise NoSubprotocol(
        f"None of the offered subprotocols is supported; this server speaks {wanted}"
    )
