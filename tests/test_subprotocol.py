"""Subprotocol negotiation (pure)."""

import pytest

from gateway.errors import CLOSE_PROTOCOL_ERROR, NoSubprotocol
from gateway.subprotocol import DEFAULT_SUBPROTOCOLS, choose_subprotocol


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["ocpp2.0.1"], "ocpp2.0.1"),
        (["", "ocpp2.0.1"], "ocpp2.0.1"),  # "Sec-WebSocket-Protocol: , ocpp2.0.1"
        (["ocpp1.6", "ocpp2.0.1"], "ocpp1.6"),  # the client's order of preference
        (["mqtt", " ocpp2.0 "], "ocpp2.0"),
    ],
)
def test_first_supported_offer_wins(offered: list[str], chosen: str) -> None:
    assert choose_subprotocol(offered, DEFAULT_SUBPROTOCOLS) == chosen


def test_no_offer_and_no_match_are_refused_with_protocol_error() -> None:
    with pytest.raises(NoSubprotocol, match="No OCPP subprotocol offered") as none:
        choose_subprotocol([], DEFAULT_SUBPROTOCOLS)
    with pytest.raises(NoSubprotocol, match="None of the offered subprotocols") as mismatch:
        choose_subprotocol(["ocpp1.5"], DEFAULT_SUBPROTOCOLS)
    assert none.value.close_code == mismatch.value.close_code == CLOSE_PROTOCOL_ERROR


def test_configured_subset_is_respected() -> None:
    with pytest.raises(NoSubprotocol):
        choose_subprotocol(["ocpp1.6"], ("ocpp2.0.1",))
