"""fakeiot: an offline stand-in for the parts of AWS IoT Core the gateway uses.

An amqtt MQTT broker (with AWS IoT's client-id take-over and ``$aws/``
topics), a Thing registry and classic device shadows, persisted in SQLite,
and an HTTP API that boto3's ``iot`` and ``iot-data`` clients talk to.
"""

from .config import FakeIotConfig
from .errors import DataDirError, DataDirLocked, FakeIotError
from .service import FakeIot, running_fakeiot

__all__ = [
    "DataDirError",
    "DataDirLocked",
    "FakeIot",
    "FakeIotConfig",
    "FakeIotError",
    "running_fakeiot",
]
