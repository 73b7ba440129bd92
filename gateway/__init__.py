"""OCPP-J WebSocket to MQTT gateway for AWS IoT Core (and its offline stand-in, fakeiot)."""

__version__ = "0.1.0"
