"""The CPO-side message processor (the AWS sample's Lambda, as an MQTT client)."""

from .service import Processor, ProcessorSettings

__all__ = ["Processor", "ProcessorSettings"]
