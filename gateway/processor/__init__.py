"""The CPO-side message processor (the AWS sample's Lambda, as an MQTT client).

The handler API (see docs/processor.md): :func:`handler`, :class:`Call`,
:class:`Context`, in :mod:`gateway.processor.handlers`.
"""

from .handlers import Call, Context, handler
from .registry import HandlerLoadError, HandlerRegistry, load_registry
from .service import Processor, ProcessorSettings

__all__ = [
    "Call",
    "Context",
    "HandlerLoadError",
    "HandlerRegistry",
    "Processor",
    "ProcessorSettings",
    "handler",
    "load_registry",
]
